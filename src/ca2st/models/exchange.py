"""Bottleneck Cross-Attention (B-CA): two streams exchange information inside a window.

Windows (``q`` and ``kv`` are patch-token grids ``(B, T, N, d)``):

* ``time``: for each position n, the T query tokens attend to the T key tokens at n (CAST's T2S).
  Equal T on both sides; when the two square grids differ in size (a ResNet stage against ViT
  tokens, DINOv2's 16×16 patches against VideoMAE's 14×14), a coarser key grid is laid onto the query
  grid by nearest neighbour (repeated r×r times when r divides) and a finer key grid whose side is r
  times the query's gives each query position the keys of its whole r×r cell, over all T;
* ``space``: for each slot t, the N query tokens attend to the key tokens of slot t (CAST's S2T);
* ``global``: every query token attends to every key token (the audio exchanges).

A window is a permutation of the projected tokens around one attention call, never a loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from .attention import attention
from .layers import trunc_normal_init

WINDOWS = ("time", "space", "global")


def _side(n: int) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"a time window between different grids needs square grids, got {n} positions")
    return side


def _sides(kv_positions: int, q_positions: int) -> tuple[int, int]:
    src, dst = _side(kv_positions), _side(q_positions)
    if src > dst and src % dst:
        raise ValueError(
            f"a time window from a {dst}x{dst} query grid onto finer {src}x{src} keys needs {dst} to divide {src}"
        )
    return src, dst


def nearest_rows(src: int, dst: int) -> torch.Tensor:
    """For each of ``dst`` cells along an axis, the nearest of ``src`` coarser cells (cell centres compared; the
    ``nearest`` rule of ``F.interpolate``): ``floor(i · src / dst)``."""
    return torch.arange(dst) * src // dst


def align_grid(kv: torch.Tensor, q_positions: int) -> torch.Tensor:
    """Regroup key tokens ``(B, T, N, d)`` onto ``q_positions`` square-grid cells: ``(B, T', q_positions, d)``.

    A coarser key grid is laid on the query grid by nearest neighbour (each key repeated r×r times when r divides);
    a finer one stacks the r×r keys of each cell along time.
    """
    B, T, N, d = kv.shape
    if N == q_positions:
        return kv
    src, dst = _sides(N, q_positions)
    grid = kv.view(B, T, src, src, d)
    if dst % src == 0:
        r = dst // src
        return grid[:, :, :, None, :, None].expand(B, T, src, r, src, r, d).reshape(B, T, q_positions, d)
    if dst > src:  # nearest neighbour, e.g. 14x14 keys onto 16x16 queries
        rows = nearest_rows(src, dst).to(kv.device)
        return grid[:, :, rows][:, :, :, rows].reshape(B, T, q_positions, d)
    r = src // dst
    cells = grid.view(B, T, dst, r, dst, r, d).permute(0, 1, 3, 5, 2, 4, 6)
    return cells.reshape(B, T * r * r, q_positions, d)


class WindowedCrossAttention(nn.Module):
    """Multi-head cross-attention of query tokens over key/value tokens inside a window.

    Private position tables (and any extra codes, e.g. time encodings) are added to both sides before
    the projections, so they reach the values too: ``(T, d)`` tables for the time window, ``(N, d)``
    for the space window, none for the global window. Key and value share one projection ``[k; v]``.
    """

    def __init__(self, dim: int, num_heads: int, window: str, q_grid: tuple[int, int], kv_grid: tuple[int, int]):
        super().__init__()
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
        if dim % num_heads:
            raise ValueError(f"exchange width {dim} is not divisible by {num_heads} heads")
        if window in ("time", "space") and q_grid[0] != kv_grid[0]:
            raise ValueError(f"a {window} window needs equal time slots on both sides, got {q_grid} and {kv_grid}")
        if window == "time" and q_grid[1] != kv_grid[1]:
            _sides(kv_grid[1], q_grid[1])
        self.window = window
        self.num_heads = num_heads
        self.q_positions = q_grid[1]
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

    def _add(self, x: torch.Tensor, table: torch.Tensor | None, codes: torch.Tensor | None) -> torch.Tensor:
        if table is not None:
            x = x + (table[:, None] if self.window == "time" else table).to(x.dtype)
        if codes is not None:
            x = x + codes.to(x.dtype)
        return x

    def forward(
        self,
        q_tokens: torch.Tensor,
        kv_tokens: torch.Tensor,
        q_codes: torch.Tensor | None = None,
        kv_codes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, N, d = q_tokens.shape
        h = self.num_heads
        q = self.q(self._add(q_tokens, self.q_pos, q_codes)).view(B, T, N, h, d // h)
        kv = self.kv(self._add(kv_tokens, self.kv_pos, kv_codes))
        if self.window == "time":
            kv = align_grid(kv, N)
        Tk, Nk = kv.shape[1:3]
        k, v = kv.view(B, Tk, Nk, 2, h, d // h).unbind(3)
        # attention on 4-D (batch, heads, tokens, head dim): the layout SDPA's fused kernels take
        if self.window == "time":  # windows = (batch, position), tokens = time
            q, k, v = (t.permute(0, 2, 3, 1, 4).reshape(-1, h, t.shape[1], d // h) for t in (q, k, v))
            out = attention(q, k, v).view(B, N, h, T, d // h).permute(0, 3, 1, 2, 4)
        elif self.window == "space":  # windows = (batch, slot), tokens = positions
            q, k, v = (t.transpose(2, 3).reshape(-1, h, t.shape[2], d // h) for t in (q, k, v))
            out = attention(q, k, v).view(B, T, h, N, d // h).transpose(2, 3)
        else:  # one window per sample, tokens = all slots and positions
            q, k, v = (t.reshape(B, -1, h, d // h).transpose(1, 2) for t in (q, k, v))
            out = attention(q, k, v).transpose(1, 2)
        return self.proj(out.reshape(B, T, N, d))


class Bottleneck(nn.Module):
    """The down- (``D -> d``) and zero-initialised up-projection (``d -> D``) of one side of a B-CA."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        nn.init.trunc_normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)


class Exchange(nn.Module):
    """B-CA between stream a and stream b; ``forward`` returns the two residual updates.

    Each side: down-projection and LayerNorm (eps 1e-6); a attends b in ``window_a``, b attends a in
    ``window_b`` (patch tokens only; special tokens skip attention but still pass through GELU and the
    up-projection); GELU; zero-initialised up-projection; drop-path.

    ``shared`` maps a side's expert to a Bottleneck owned by an earlier exchange of the same layer
    (CA²ST's shared projections); it is borrowed, not registered, so its weights are saved once.
    """

    def __init__(
        self,
        a: str,
        b: str,
        dims: tuple[int, int],
        width: int,
        num_heads: int,
        windows: tuple[str, str],
        grids: tuple[tuple[int, int], tuple[int, int]],
        specials: tuple[int, int],
        drop_path: float = 0.0,
        shared: dict[str, Bottleneck] | None = None,
    ):
        super().__init__()
        shared = shared or {}
        self.a, self.b = a, b
        self.special_a, self.special_b = specials
        if a not in shared:
            self.proj_a = Bottleneck(dims[0], width)
        if b not in shared:
            self.proj_b = Bottleneck(dims[1], width)
        self._projections = (shared.get(a) or self.proj_a, shared.get(b) or self.proj_b)
        self.norm_a, self.norm_b = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.attn_a = WindowedCrossAttention(width, num_heads, windows[0], grids[0], grids[1])
        self.attn_b = WindowedCrossAttention(width, num_heads, windows[1], grids[1], grids[0])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def projection(self, expert: str) -> Bottleneck:
        return self._projections[0 if expert == self.a else 1]

    def forward(
        self,
        xa: torch.Tensor,
        xb: torch.Tensor,
        codes_a: torch.Tensor | None = None,
        codes_b: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        proj_a, proj_b = self._projections
        na = self.norm_a(proj_a.down(xa))
        nb = self.norm_b(proj_b.down(xb))
        sa, sb = self.special_a, self.special_b
        pa, pb = na[:, :, sa:], nb[:, :, sb:]
        ya = self.attn_a(pa, pb, codes_a, codes_b)
        yb = self.attn_b(pb, pa, codes_b, codes_a)
        if sa:
            ya = torch.cat((na[:, :, :sa], ya), dim=2)
        if sb:
            yb = torch.cat((nb[:, :, :sb], yb), dim=2)
        return self.drop_path(proj_a.up(F.gelu(ya))), self.drop_path(proj_b.up(F.gelu(yb)))

    def pos_tables(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        tables = {}
        for name in ("attn_a", "attn_b"):
            attn = getattr(self, name)
            if attn.q_pos is not None:
                tables[f"{name}.q_pos"] = (attn.pos_kind, (attn.q_pos.shape[0],))
                tables[f"{name}.kv_pos"] = (attn.pos_kind, (attn.kv_pos.shape[0],))
        return tables
