"""Spatial expert, convolutional variant: torchvision's ResNet-50 on every other frame."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.ops import FrozenBatchNorm2d

from .base import Expert


class ResNetExpert(Expert):
    """ResNet-50 (torchvision architecture, frozen batch norms) over frames ``1, 3, 5, …``.

    The stem runs in ``embed``; stage k (``layer1`` … ``layer4``) runs in ``attend`` of layer
    ``stage_layers[k]`` of the model, so each stage is followed by an exchange with the temporal
    expert. Streams are channels-last feature maps ``(B, T, H·W, C)``. The pooled feature is the
    global average over positions and frames, ``(B, 2048)``. Batch norms use their stored
    statistics in training too (the experts are frozen). Weights come from a torchvision state dict.
    """

    modality = "video"
    num_special = 0
    patch_size = 32  # the stride of its last stage
    weights_license = "BSD-3-Clause (torchvision)"

    def __init__(
        self,
        img_size: int = 224,
        num_frames: int = 16,
        frame_stride: int = 2,
        frame_offset: int = 1,
        stage_layers: tuple[int, ...] = (2, 5, 8, 11),
    ):
        super().__init__()
        if img_size % 32:
            raise ValueError(f"img_size {img_size} must be a multiple of 32 for ResNet-50")
        net = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.frame_stride, self.frame_offset = frame_stride, frame_offset
        self.stage_layers = tuple(stage_layers)
        slots = len(range(frame_offset, num_frames, frame_stride))
        self.sides = tuple(img_size // s for s in (4, 8, 16, 32))
        self.widths = (256, 512, 1024, 2048)
        self.grid = (slots, self.sides[-1] ** 2)
        self.norm = nn.Identity()

    @property
    def depth(self) -> int:
        return self.stage_layers[-1] + 1

    def _stage(self, layer: int) -> int:
        """Index of the last stage that has run after ``attend`` of ``layer`` (-1: only the stem)."""
        return sum(1 for s in self.stage_layers if s <= layer) - 1

    def grid_at(self, layer: int) -> tuple[int, int]:
        return self.grid[0], self.sides[self._stage(layer)] ** 2

    def dim_at(self, layer: int) -> int:
        return self.widths[self._stage(layer)]

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        images, B, T = self.frame_images(video)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self._to_stream(x, B, T)

    @staticmethod
    def _to_stream(x: torch.Tensor, B: int, T: int) -> torch.Tensor:
        _, C, H, W = x.shape
        return x.permute(0, 2, 3, 1).reshape(B, T, H * W, C)

    def attend(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        if layer not in self.stage_layers:
            return x
        stage = (self.layer1, self.layer2, self.layer3, self.layer4)[self.stage_layers.index(layer)]
        B, T, N, C = x.shape
        side = int(round(N**0.5))
        x = x.reshape(B * T, side, side, C).permute(0, 3, 1, 2)
        return self._to_stream(stage(x), B, T)

    def feed_forward(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2))

    def trainable_modules(self) -> list[nn.Module]:
        return []
