"""What every expert module uses to declare itself: its weight layouts (:class:`WeightFormat`) and the options a
model config gives its builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["WeightFormat", "common_options", "frame_options", "spatial_patch"]


@dataclass(frozen=True)
class WeightFormat:
    """A released weight layout: ``detect(state_dict) -> bool`` and ``convert(state_dict) -> (tensors under the
    expert's own names, keys that fit nothing)``."""

    name: str
    detect: Callable[[dict], bool]
    convert: Callable[[dict], tuple[dict, list[str]]]


def common_options(cfg, drop_path_rates: list[float]) -> dict:
    """The transformer options every ViT expert takes from a model config."""
    return dict(
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        adapter_ratio=cfg.adapter_ratio,
        drop_path_rates=drop_path_rates,
    )


def frame_options(cfg) -> dict:
    """Image experts see every ``tubelet_size``-th frame, the last of each tubelet: one slot per temporal slot."""
    return dict(
        img_size=cfg.img_size,
        num_frames=cfg.num_frames,
        frame_stride=cfg.tubelet_size,
        frame_offset=cfg.tubelet_size - 1,
    )


def spatial_patch(cfg) -> int:
    """The spatial expert's patch size: ``spatial_patch_size`` when set, else ``patch_size``."""
    return cfg.spatial_patch_size or cfg.patch_size
