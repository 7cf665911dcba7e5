"""Spatial expert: the CLIP ViT image tower (OpenAI layout) applied to every other frame."""

from __future__ import annotations

import torch
from torch import nn

from ...data.transforms import CLIP_MEAN, CLIP_STD
from ..layers import QuickGELU
from .base import Expert, ExpertBlock, block_stack


class CLIPExpert(Expert):
    """CLIP ViT image encoder over frames ``frame_offset, frame_offset + frame_stride, ...``.

    Bias-free patch conv, class embedding, ``1 + N`` learned positions, ``ln_pre``, pre-LN blocks
    with QuickGELU MLPs (LayerNorm eps 1e-5), per-frame self-attention. The stream has one slot per
    selected frame: ``(B, T, 1 + N, D)``; the pooled feature is ``ln_post`` of the class token
    averaged over frames. CAST feeds frames 1, 3, 5, …: frame t is the second frame of tubelet t.
    """

    modality = "video"
    num_special = 1
    per_slot_attention = True
    mean, std = CLIP_MEAN, CLIP_STD  # the official presets feed ImageNet's instead, as the official CAST does
    weights_license = "MIT (OpenAI CLIP)"

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        frame_stride: int = 2,
        frame_offset: int = 1,
        adapter_ratio: float = 0.25,
        drop_path_rates: list[float] | None = None,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        side = img_size // patch_size
        self.patch_size = patch_size
        self.frame_stride, self.frame_offset = frame_stride, frame_offset
        self.grid = (len(range(frame_offset, num_frames, frame_stride)), side * side)
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(embed_dim) * embed_dim**-0.5)
        self.pos_embed = nn.Parameter(torch.randn(1 + side * side, embed_dim) * embed_dim**-0.5)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=1e-5)
        self.blocks = block_stack(
            depth,
            drop_path_rates,
            lambda dp: ExpertBlock(embed_dim, num_heads, mlp_ratio, QuickGELU, 1e-5, "full", adapter_ratio, dp),
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        images, B, T = self.frame_images(video)
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(B * T, 1, -1)
        x = self.norm_pre(torch.cat((cls, x), dim=1) + self.pos_embed.to(x.dtype))
        return x.view(B, T, x.shape[1], x.shape[2])

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x[:, :, 0].mean(dim=1))

    def pos_tables(self):
        return {"pos_embed": ("cls+space", (self.grid[1],))}
