"""Classification heads over the pooled expert features."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .adapter import Adapter
from .layers import Mlp, QuickGELU


def make_fuser(kind: str, in_dim: int, dim: int, ratio: float) -> nn.Module:
    """A per-expert map into the fused feature space.

    ``adapter``: CAST's last adapter (no skip, zero at initialisation); ``mlp``: the audio branch,
    Linear–QuickGELU–Linear with truncated-normal weights; ``linear``: a projection of a wider feature
    (ResNet-50's 2048 channels).
    """
    if kind == "adapter":
        return Adapter(dim, ratio)
    if kind == "mlp":
        mlp = Mlp(in_dim, int(dim * ratio), QuickGELU, out_dim=dim)
        for lin in (mlp.fc1, mlp.fc2):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        return mlp
    if kind == "linear":
        return nn.Linear(in_dim, dim)
    raise ValueError(f"unknown fuser {kind!r}")


class ClassifierHead(nn.Module):
    """``fc(dropout(sum over sources of fuse_e(feature_e)))``; with no fusers the single source feature
    goes straight to ``fc``."""

    def __init__(
        self,
        sources: Mapping[str, int],
        fusers: Mapping[str, str] | None,
        dim: int,
        num_classes: int,
        ratio: float = 0.25,
        drop: float = 0.0,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.sources = tuple(sources)
        if fusers:
            self.fuse = nn.ModuleDict({s: make_fuser(fusers[s], sources[s], dim, ratio) for s in self.sources})
            in_dim = dim
        else:
            if len(self.sources) != 1:
                raise ValueError("a head over several experts needs fusers")
            self.fuse = None
            in_dim = sources[self.sources[0]]
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def fuse_features(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The classifier's input ``(B, d)``: the sum of the fused source features (before dropout)."""
        parts = [self.fuse[s](features[s]) if self.fuse is not None else features[s] for s in self.sources]
        fused = parts[0]
        for part in parts[1:]:
            fused = fused + part
        return fused

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(self.drop(self.fuse_features(features)))


class CompositionHead(nn.Module):
    """One ClassifierHead per task (EPIC-KITCHENS: ``verb`` and ``noun``); returns a dict of logits."""

    def __init__(self, tasks: Mapping[str, ClassifierHead]):
        super().__init__()
        self.tasks = nn.ModuleDict(tasks)

    def fuse_features(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task head's classifier input, ``{task: (B, d)}``."""
        return {name: head.fuse_features(features) for name, head in self.tasks.items()}

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.tasks.items()}
