"""Bottleneck adapters: the small trainable modules placed around each frozen expert layer."""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """``fc2(GELU(fc1(x)))`` with a ``dim * ratio`` bottleneck, plus ``x`` when ``skip``.

    ``fc2`` starts at zero, so a skip adapter starts as the identity and a plain one as zero.
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = False):
        super().__init__()
        hidden = int(dim * ratio)
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out
