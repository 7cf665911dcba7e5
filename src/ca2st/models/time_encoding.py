"""Absolute-time codes for the audio exchanges: an MLP of (start, end) seconds per time group."""

from __future__ import annotations

import torch
from torch import nn

from .layers import trunc_normal_init


class TimeEncoder(nn.Module):
    """(start, end) seconds -> a width-d code: Linear–ReLU–Linear–ReLU–Linear–ReLU–LayerNorm."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.LayerNorm(width),
        )
        trunc_normal_init(self)

    def forward(self, intervals: torch.Tensor) -> torch.Tensor:
        return self.mlp(intervals)


def default_times(batch: int, slots: int, audio_seconds: float, device=None) -> torch.Tensor:
    """``(B, 1 + slots, 2)`` when the caller gives no times: the audio window ``[0, audio_seconds]``
    and the video slots splitting the same window evenly (audio and video aligned)."""
    edges = torch.linspace(0, audio_seconds, slots + 1, device=device)  # built on the device: no host copy
    video = torch.stack((edges[:-1], edges[1:]), dim=-1)
    window = torch.stack((edges[0], edges[-1]))[None]
    return torch.cat((window, video)).expand(batch, -1, -1)


def audio_column_groups(columns: int, groups: int, device=None) -> torch.Tensor:
    """Group index of each spectrogram column: ``columns // groups + 1`` consecutive columns per group,
    the last group possibly shorter (the reference's assignment)."""
    return torch.arange(columns, device=device) // (columns // groups + 1)


class TimeCodes(nn.Module):
    """Codes for the patch tokens of each stream from ``times`` ``(B, 1 + T, 2)`` in seconds.

    Row 0 is the audio window, rows 1..T the intervals of the T video time slots (tubelets). Times are
    taken relative to the audio window's start. The audio window is split into T equal intervals;
    each spectrogram column takes the code of its interval, broadcast over the frequency rows in AST's
    frequency-major token order (the reference lays them out time-major, which mismatches its tokens).
    Video slots take their own interval's code, broadcast over positions.
    """

    def __init__(self, width: int, freq_time: tuple[int, int]):
        super().__init__()
        self.video = TimeEncoder(width)
        self.audio = TimeEncoder(width)
        self.freq_time = freq_time

    def forward(self, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(video codes ``(B, T, 1, d)``, audio codes ``(B, 1, f·t, d)``)."""
        times = times - times[:, :1, :1]
        window, slots = times[:, 0], times[:, 1:]
        B, T, _ = slots.shape
        f, t = self.freq_time
        edges = window[:, :1] + (window[:, 1:] - window[:, :1]) * torch.linspace(0, 1, T + 1, device=times.device)
        groups = torch.stack((edges[:, :-1], edges[:, 1:]), dim=-1)  # (B, T, 2)
        audio = self.audio(groups)[:, audio_column_groups(t, T, times.device)]  # (B, t, d)
        audio = audio[:, None].expand(B, f, t, audio.shape[-1]).reshape(B, 1, f * t, -1)
        return self.video(slots)[:, :, None], audio
