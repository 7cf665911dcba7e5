"""The frozen-expert interface: embed an input into a stream, run layers in two halves, pool.

A *stream* is one tensor ``(B, T, L, D)``: T time slots, each holding ``num_special`` special tokens
(class/distillation tokens) followed by N patch tokens, ``L = num_special + N``.
"""

from __future__ import annotations

from typing import Callable

import torch
from timm.layers import DropPath
from torch import nn

from ..adapter import Adapter
from ..layers import Mlp, SelfAttention


class ExpertBlock(nn.Module):
    """A frozen pre-LN transformer block with the two trainable adapters of CAST.

    ``attend``: ``x + A(attn(norm1(x)))`` where A keeps its input (adapter with skip).
    ``feed_forward``: ``x + mlp(norm2(x)) + drop_path(0.5 * A'(norm2(x)))`` (adapter without skip).
    ``adapter_ratio=0`` builds the plain expert block.
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
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)
        if adapter_ratio:
            self.attn_adapter = Adapter(dim, adapter_ratio, skip=True)
            self.mlp_adapter = Adapter(dim, adapter_ratio, skip=False)
        else:
            self.attn_adapter = nn.Identity()
            self.mlp_adapter = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn_adapter(self.attn(self.norm1(x)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.norm2(x)
        out = x + self.mlp(u)
        if self.mlp_adapter is not None:
            out = out + self.drop_path(0.5 * self.mlp_adapter(u))
        return out


class Expert(nn.Module):
    """Base class of the frozen experts.

    Subclasses set ``modality`` (``'video'`` or ``'audio'``), ``num_special``, ``grid`` (T, N),
    ``per_slot_attention`` (True: self-attention inside each time slot; False: over the whole
    stream), build ``blocks`` (a ModuleList of ExpertBlock) and ``norm`` (the final, trainable
    norm), and implement ``embed`` and ``pool``.
    """

    modality: str = "video"
    num_special: int = 0
    per_slot_attention: bool = False
    grid: tuple[int, int]
    blocks: nn.ModuleList
    norm: nn.Module

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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
