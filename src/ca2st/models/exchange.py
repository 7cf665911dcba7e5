"""Bottleneck Cross-Attention (B-CA): two streams exchange information inside a window.

Windows (``q`` and ``kv`` are patch-token grids ``(B, T, N, d)``):

* ``time``: for each position n, the T query tokens attend to the T key tokens at n
  (needs equal T and N on both sides; CAST's T2S);
* ``space``: for each slot t, the N query tokens attend to the key tokens of slot t
  (needs equal T; CAST's S2T);
* ``global``: every query token attends to every key token (the audio exchanges).

A window is a permutation of the projected tokens around one SDPA call, never a loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from .layers import trunc_normal_init

WINDOWS = ("time", "space", "global")


class WindowedCrossAttention(nn.Module):
    """Multi-head cross-attention of query tokens over key/value tokens inside a window.

    Private position tables are added to both sides before the projections (so they reach the
    values too): ``(T, d)`` tables for the time window, ``(N, d)`` for the space window, none for
    the global window. Key and value share one projection whose output is ``[k; v]``.
    """

    def __init__(self, dim: int, num_heads: int, window: str, q_grid: tuple[int, int], kv_grid: tuple[int, int]):
        super().__init__()
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
        if dim % num_heads:
            raise ValueError(f"exchange width {dim} is not divisible by {num_heads} heads")
        if window == "time" and tuple(q_grid) != tuple(kv_grid):
            raise ValueError(f"a time window needs equal grids on both sides, got {q_grid} and {kv_grid}")
        if window == "space" and q_grid[0] != kv_grid[0]:
            raise ValueError(f"a space window needs equal time slots on both sides, got {q_grid} and {kv_grid}")
        self.window = window
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_init(self)
        axis = {"time": 0, "space": 1}.get(window)
        if axis is not None:
            scale = (dim // num_heads) ** -0.5
            self.q_pos = nn.Parameter(scale * torch.randn(q_grid[axis], dim))
            self.kv_pos = nn.Parameter(scale * torch.randn(kv_grid[axis], dim))
            self.pos_kind = ("time", "space")[axis]
        else:
            self.q_pos = self.kv_pos = None

    def _add_pos(self, x: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
        if table is None:
            return x
        table = table.to(x.dtype)
        return x + (table[:, None] if self.window == "time" else table)

    def forward(self, q_tokens: torch.Tensor, kv_tokens: torch.Tensor) -> torch.Tensor:
        B, T, N, d = q_tokens.shape
        h = self.num_heads
        q = self.q(self._add_pos(q_tokens, self.q_pos)).view(B, T, N, h, d // h)
        kv = self.kv(self._add_pos(kv_tokens, self.kv_pos))
        Tk, Nk = kv.shape[1:3]
        k, v = kv.view(B, Tk, Nk, 2, h, d // h).unbind(3)
        if self.window == "time":  # (B, N, h, T, hd)
            q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).permute(0, 3, 1, 2, 4)
        elif self.window == "space":  # (B, T, h, N, hd)
            q, k, v = (t.transpose(2, 3) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3)
        else:  # (B, h, T·N, hd)
            q, k, v = (t.reshape(B, -1, h, d // h).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.proj(out.reshape(B, T, N, d))


class Exchange(nn.Module):
    """B-CA between stream a and stream b, updating both.

    Each side: down-projection ``D -> d`` and LayerNorm (eps 1e-6); a attends b in ``window_a``,
    b attends a in ``window_b`` (patch tokens only; special tokens skip attention but still pass
    through GELU and the up-projection); GELU; zero-initialised up-projection ``d -> D``; drop-path;
    residual.
    """

    def __init__(self, a: str, b: str, dim: int, bottleneck_ratio: float, num_heads: int,
                 window_a: str, window_b: str, grid_a: tuple[int, int], grid_b: tuple[int, int],
                 special_a: int, special_b: int, drop_path: float = 0.0):
        super().__init__()
        d = int(dim * bottleneck_ratio)
        self.a, self.b = a, b
        self.special_a, self.special_b = special_a, special_b
        self.down_a, self.down_b = nn.Linear(dim, d), nn.Linear(dim, d)
        self.norm_a, self.norm_b = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        trunc_normal_init(self)
        self.attn_a = WindowedCrossAttention(d, num_heads, window_a, grid_a, grid_b)
        self.attn_b = WindowedCrossAttention(d, num_heads, window_b, grid_b, grid_a)
        self.up_a, self.up_b = nn.Linear(d, dim), nn.Linear(d, dim)
        for up in (self.up_a, self.up_b):
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        na = self.norm_a(self.down_a(xa))
        nb = self.norm_b(self.down_b(xb))
        sa, sb = self.special_a, self.special_b
        pa, pb = na[:, :, sa:], nb[:, :, sb:]
        ya, yb = self.attn_a(pa, pb), self.attn_b(pb, pa)
        if sa:
            ya = torch.cat((na[:, :, :sa], ya), dim=2)
        if sb:
            yb = torch.cat((nb[:, :, :sb], yb), dim=2)
        xa = xa + self.drop_path(self.up_a(F.gelu(ya)))
        xb = xb + self.drop_path(self.up_b(F.gelu(yb)))
        return xa, xb

    def pos_tables(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        tables = {}
        for name in ("attn_a", "attn_b"):
            attn = getattr(self, name)
            if attn.q_pos is not None:
                tables[f"{name}.q_pos"] = (attn.pos_kind, (attn.q_pos.shape[0],))
                tables[f"{name}.kv_pos"] = (attn.pos_kind, (attn.kv_pos.shape[0],))
        return tables
