"""Temporal expert: the VideoMAE ViT video encoder (tubelet embedding, joint space-time attention)."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import sincos_table
from .base import Expert, ExpertBlock, block_stack
from .building import common_options


class VideoMAEExpert(Expert):
    """VideoMAE ViT: ``tubelet × patch × patch`` Conv3d, a fixed sine-cosine table over the
    ``T · N`` tokens (time-major), pre-LN blocks with q/v biases and GELU (LayerNorm eps 1e-6),
    attention over the whole clip. Stream ``(B, T, N, D)`` with ``T = frames / tubelet``; the pooled
    feature is ``fc_norm`` of the mean over all tokens.

    The sine-cosine table is not a weight: it is rebuilt for the model's own token count, as
    VideoMAE does. A checkpoint with a learned table can replace it (``load_pos_embed``).
    """

    modality = "video"
    num_special = 0
    per_slot_attention = False
    weights_license = "CC-BY-NC-4.0 (VideoMAE)"

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        adapter_ratio: float = 0.25,
        drop_path_rates: list[float] | None = None,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}")
        side = img_size // patch_size
        self.patch_size, self.frames_per_slot = patch_size, tubelet_size
        self.grid = (num_frames // tubelet_size, side * side)
        self.patch_embed = nn.Conv3d(
            3, embed_dim, (tubelet_size, patch_size, patch_size), (tubelet_size, patch_size, patch_size)
        )
        self.register_buffer("pos_embed", sincos_table(self.grid[0] * self.grid[1], embed_dim), persistent=False)
        self.blocks = block_stack(
            depth,
            drop_path_rates,
            lambda dp: ExpertBlock(embed_dim, num_heads, mlp_ratio, nn.GELU, 1e-6, "qv", adapter_ratio, dp),
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(video)
        B, D, T, H, W = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)
        return x.view(B, T, H * W, D)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.mean(dim=(1, 2)))

    @torch.no_grad()
    def load_pos_embed(self, table: torch.Tensor) -> None:
        """Use a learned ``(T·N, D)`` table from a checkpoint (already resized to this grid)."""
        self.pos_embed.copy_(table.reshape(self.pos_embed.shape))


def build(cfg, drop_path_rates: list[float], cls: type[VideoMAEExpert] = VideoMAEExpert) -> VideoMAEExpert:
    """The temporal expert of a model config (``cls``: this expert or a variant with its computation)."""
    return cls(
        patch_size=cfg.patch_size,
        tubelet_size=cfg.tubelet_size,
        img_size=cfg.img_size,
        num_frames=cfg.num_frames,
        **common_options(cfg, drop_path_rates),
    )
