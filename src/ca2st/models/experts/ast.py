"""Audio expert: the Audio Spectrogram Transformer (AST, DeiT-B/16 layout) on log-mel frames."""

from __future__ import annotations

import torch
from torch import nn

from .base import Expert, ExpertBlock, block_stack


def ast_grid(num_mel_bins: int, num_frames: int, patch_size: int = 16, stride: int = 10) -> tuple[int, int]:
    """(frequency rows f, time columns t) of AST's overlapping patches."""
    return (num_mel_bins - patch_size) // stride + 1, (num_frames - patch_size) // stride + 1


class ASTExpert(Expert):
    """AST: a 1-channel ``patch × patch`` conv with ``stride`` on both spectrogram axes, CLS and
    distillation tokens, a learned position table, pre-LN blocks with GELU (LayerNorm eps 1e-6).

    Input: log-mel frames ``(B, L, mel)``, read as an image ``(B, 1, mel, L)``. The stream has one
    slot: ``(B, 1, 2 + f·t, D)``, patches in AST's frequency-major order (index = row · t + column).
    The pooled feature is the mean of CLS and DIST after the final norm.
    """

    modality = "audio"
    num_special = 2
    per_slot_attention = False
    mean = std = None  # log-mel input, normalised by the data pipeline (ca2st.data.audio)
    weights_license = "BSD-3-Clause (AST)"

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_mel_bins: int = 128,
        num_frames: int = 400,
        patch_size: int = 16,
        stride: int = 10,
        adapter_ratio: float = 0.25,
        drop_path_rates: list[float] | None = None,
    ):
        super().__init__()
        self.num_mel_bins, self.num_frames = num_mel_bins, num_frames
        self.freq_time = ast_grid(num_mel_bins, num_frames, patch_size, stride)
        positions = self.freq_time[0] * self.freq_time[1]
        self.grid = (1, positions)
        self.patch_embed = nn.Conv2d(1, embed_dim, patch_size, stride)
        self.cls_token = nn.Parameter(torch.zeros(embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(2 + positions, embed_dim))
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.blocks = block_stack(
            depth,
            drop_path_rates,
            lambda dp: ExpertBlock(embed_dim, num_heads, mlp_ratio, nn.GELU, 1e-6, "full", adapter_ratio, dp),
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or tuple(audio.shape[1:]) != (self.num_frames, self.num_mel_bins):
            raise ValueError(
                f"audio must have shape (B, {self.num_frames}, {self.num_mel_bins}) = (batch, log-mel "
                f"frames, mel bins) for this model, got {tuple(audio.shape)}; build the model with "
                f"audio_frames matching the input"
            )
        x = self.patch_embed(audio.transpose(1, 2).unsqueeze(1))  # (B, D, f, t)
        x = x.flatten(2).transpose(1, 2)  # frequency-major
        B, _, D = x.shape
        special = torch.stack((self.cls_token, self.dist_token)).to(x.dtype).expand(B, -1, -1)
        x = torch.cat((special, x), dim=1) + self.pos_embed.to(x.dtype)
        return x.view(B, 1, x.shape[1], D)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x[:, 0, :2])
        return (x[:, 0] + x[:, 1]) / 2

    def pos_tables(self):
        return {"pos_embed": ("audio", self.freq_time)}
