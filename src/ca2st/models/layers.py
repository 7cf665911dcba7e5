"""Building blocks shared by every expert: attention through SDPA, MLPs, position tables."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention


class QuickGELU(nn.Module):
    """CLIP's activation: ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    """Two linear layers with an activation between them."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch (CaiT's layer scale; DINOv2's ``ls1``/``ls2``)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection and :func:`~ca2st.models.attention.attention`.

    ``qkv_bias='full'`` gives q, k and v a bias (CLIP, AST); ``'qv'`` gives q and v a bias
    and fixes the k bias at zero (VideoMAE, BEiT style).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: str = "full"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        if qkv_bias not in ("full", "qv"):
            raise ValueError(f"qkv_bias must be 'full' or 'qv', got {qkv_bias!r}")
        self.num_heads = num_heads
        self.qkv_bias = qkv_bias
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias == "full")
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        if self.qkv_bias == "qv":
            bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        else:
            bias = self.qkv.bias
        qkv = F.linear(x, self.qkv.weight, bias).view(B, L, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sine-cosine table of VideoMAE: ``(num_positions, dim)``.

    Angle of position p, channel j: ``p / 10000 ** (2 * (j // 2) / dim)``; sin on even channels, cos on odd.
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angle = pos / torch.pow(10000.0, exponent)
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


def resize_pos_table(
    table: torch.Tensor,
    src_grid: tuple[int, ...],
    dst_grid: tuple[int, ...],
    num_prefix: int = 0,
    mode: str | None = None,
    antialias: bool = False,
) -> torch.Tensor:
    """Resize a position table laid out as ``num_prefix`` free rows then a row-major grid.

    The rule (used for every table in ca2st): prefix rows (class tokens) are kept; the grid is
    interpolated in float32 to the target size with ``align_corners=False`` — linearly along a 1-D axis
    (time), bicubically on a 2-D grid (space), trilinearly on a 3-D grid (time × space); ``mode`` overrides
    the choice, ``antialias`` selects PyTorch's antialiased filter (bilinear and bicubic only).
    """
    if tuple(src_grid) == tuple(dst_grid):
        return table
    prefix, grid = table[:num_prefix], table[num_prefix:]
    if grid.shape[0] != math.prod(src_grid):
        raise ValueError(f"table of {grid.shape[0]} grid rows does not match grid {src_grid}")
    mode = mode or {1: "linear", 2: "bicubic", 3: "trilinear"}[len(src_grid)]
    dim = grid.shape[-1]
    x = grid.float().T.reshape(1, dim, *src_grid)
    x = F.interpolate(x, size=tuple(dst_grid), mode=mode, align_corners=False, antialias=antialias)
    grid = x.reshape(dim, -1).T.to(table.dtype)
    return torch.cat((prefix, grid)) if num_prefix else grid


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal weights and zero biases for every Linear; unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
