"""Classification heads over the pooled expert features."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .adapter import Adapter


class ClassifierHead(nn.Module):
    """``fc(dropout(sum of fuse_e(feature_e)))`` over the source experts.

    With ``fuse_ratio`` each source passes through its own adapter without skip (CAST's "last
    adapters", zero at initialisation); without it the single source feature goes straight to ``fc``.
    """

    def __init__(self, sources: Sequence[str], dim: int, num_classes: int, fuse_ratio: float = 0.0,
                 drop: float = 0.0, init_std: float = 0.02):
        super().__init__()
        self.sources = tuple(sources)
        self.fuse = nn.ModuleDict({s: Adapter(dim, fuse_ratio) for s in self.sources}) if fuse_ratio else None
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.fuse[s](features[s]) if self.fuse is not None else features[s] for s in self.sources]
        fused = parts[0]
        for part in parts[1:]:
            fused = fused + part
        return self.fc(self.drop(fused))


class CompositionHead(nn.Module):
    """One ClassifierHead per task (EPIC-KITCHENS: ``verb`` and ``noun``); returns a dict of logits."""

    def __init__(self, tasks: Mapping[str, ClassifierHead]):
        super().__init__()
        self.tasks = nn.ModuleDict(tasks)

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.tasks.items()}
