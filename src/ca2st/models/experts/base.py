"""The frozen-expert interface (the *expert contract*): embed an input into a stream, run layers in two halves, pool.

A *stream* is one tensor ``(B, T, L, D)``: T time slots, each holding ``num_special`` special tokens
(class/distillation/register tokens) followed by N patch tokens, ``L = num_special + N``.

Every expert declares, as class or instance attributes:

* ``modality``: ``'video'`` (input ``(B, 3, F, S, S)``) or ``'audio'`` (log-mel ``(B, L, mel)``);
* ``grid = (T, N)``: time slots × patch positions of its stream (square patch grids for video experts, raster
  order); ``grid_at(layer)`` / ``dim_at(layer)`` when they change with depth (ResNet stages);
* ``num_special``: special tokens leading each slot; they take part in the expert's own attention but never in a
  B-CA window (the exchanges see patch tokens only);
* ``patch_size`` and ``frames_per_slot`` (1 for image experts applied to every ``frame_stride``-th frame, the tubelet
  size for video experts);
* ``mean``/``std``/``color_order``: the RGB statistics (of [0, 1] pixels) and channel order its weights were
  trained with. The official presets feed every expert the input recipe's statistics (ImageNet's, as the
  official CAST does); a config with ``own_normalization`` gives each video expert its own (the model converts);
* ``per_slot_attention``: self-attention inside each time slot (image experts) or over the whole stream;
* ``pool(stream) -> (B, feature_dim)``: its pooled output (documented per expert), the head's input;
* ``norm``: its final norm, trained with the adapters (``trainable_modules``);
* ``weights_license``: the licence of its usual released weights (the user's to honour);
* ``pos_tables()``: its resizable position tables, resized at load time by the expert's rule
  (:func:`ca2st.models.layers.resize_pos_table` unless the expert says otherwise, e.g. ``cls+space:antialias``
  for the antialiased filter; see :func:`ca2st.checkpoints.io.resize_tables`).

Experts are registered by architecture name in :mod:`ca2st.models.experts.archs`.
"""

from __future__ import annotations

from typing import Callable

import torch
from timm.layers import DropPath
from torch import nn

from ...data.recipe import IMAGENET_MEAN, IMAGENET_STD
from ..adapter import Adapter
from ..layers import LayerScale, Mlp, SelfAttention


class ExpertBlock(nn.Module):
    """A frozen pre-LN transformer block with the two trainable adapters of CAST.

    ``attend``: ``x + A(ls1(attn(norm1(x))))`` where A keeps its input (adapter with skip).
    ``feed_forward``: ``x + ls2(mlp(norm2(x))) + drop_path(0.5 * A'(norm2(x)))`` (adapter without skip).
    ``ls1``/``ls2`` are the frozen layer scales of ``layer_scale=True`` (DINOv2), identities otherwise. The
    adapters sit outside them, as CAST places its adapters around a block's branches: the attention adapter
    wraps the whole attention branch (its layer-scaled output) and the MLP adapter runs parallel to the whole
    layer-scaled MLP branch, so the frozen scales never scale the adapters' updates and the zero-initialised
    adapters still leave the block unchanged at initialisation. ``adapter_ratio=0`` builds the plain block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        act_layer: type[nn.Module],
        norm_eps: float,
        qkv_bias: str,
        adapter_ratio: float,
        drop_path: float = 0.0,
        layer_scale: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()
        if adapter_ratio:
            self.attn_adapter = Adapter(dim, adapter_ratio, skip=True)
            self.mlp_adapter = Adapter(dim, adapter_ratio, skip=False)
        else:
            self.attn_adapter = nn.Identity()
            self.mlp_adapter = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn_adapter(self.ls1(self.attn(self.norm1(x))))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.norm2(x)
        out = x + self.ls2(self.mlp(u))
        if self.mlp_adapter is not None:
            out = out + self.drop_path(0.5 * self.mlp_adapter(u))
        return out


class Expert(nn.Module):
    """Base class of the frozen experts.

    Subclasses declare the attributes of the expert contract (the module docstring), build ``blocks`` (a
    ModuleList of ExpertBlock) and ``norm`` (the final, trainable norm), and implement ``embed`` and ``pool``.
    """

    modality: str = "video"
    num_special: int = 0
    per_slot_attention: bool = False
    grid: tuple[int, int]
    blocks: nn.ModuleList
    norm: nn.Module
    patch_size: int = 16
    frames_per_slot: int = 1
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    color_order: str = "RGB"
    weights_license: str = "unknown"

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def frame_images(self, video: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """For image experts (``frame_stride``, ``frame_offset``): the frames they read, every ``frame_stride``-th
        from ``frame_offset``, as one image batch ``(B·T, C, H, W)``, with ``B`` and ``T``."""
        frames = video[:, :, self.frame_offset :: self.frame_stride]
        B, C, T, H, W = frames.shape
        return frames.transpose(1, 2).reshape(B * T, C, H, W), B, T

    def attend(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        B, T, L, D = x.shape
        flat = x.reshape(B * T, L, D) if self.per_slot_attention else x.reshape(B, T * L, D)
        return self.blocks[layer].attend(flat).view(B, T, L, D)

    def feed_forward(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[layer].feed_forward(x)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run the expert alone (with its adapters): the final stream before pooling."""
        x = self.embed(inputs)
        for i in range(self.depth):
            x = self.feed_forward(i, self.attend(i, x))
        return x

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def grid_at(self, layer: int) -> tuple[int, int]:
        """(time slots, positions) of the stream after ``attend`` of ``layer``."""
        return self.grid

    def dim_at(self, layer: int) -> int:
        """Channel width of the stream after ``attend`` of ``layer``."""
        return self.norm.normalized_shape[0]

    @property
    def feature_dim(self) -> int:
        return self.norm.normalized_shape[0]

    def pos_tables(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Position tables that checkpoint loaders may resize: name -> (kind, grid)."""
        return {}

    def trainable_modules(self) -> list[nn.Module]:
        """Modules that train while the expert stays frozen: adapters and the final norm."""
        return [m for m in self.modules() if isinstance(m, Adapter)] + [self.norm]


def block_stack(depth: int, drop_path_rates: list[float] | None, make: Callable[[float], ExpertBlock]) -> nn.ModuleList:
    rates = drop_path_rates or [0.0] * depth
    return nn.ModuleList(make(rates[i]) for i in range(depth))
