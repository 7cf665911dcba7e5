"""Presets: named ModelConfigs. ``build_model(name, **overrides)`` is the public entry point."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from .config import ExchangeSpec, ModelConfig
from .multiexpert import MultiExpertModel

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}

# CAST's S&T exchange: spatial queries temporal along time (T2S), temporal queries spatial along space (S2T).
SPATIAL_TEMPORAL = ExchangeSpec("spatial", "temporal", "time", "space")


def register(name: str):
    def wrap(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        _PRESETS[name] = fn
        return fn
    return wrap


def list_models() -> list[str]:
    return sorted(_PRESETS)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in _PRESETS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _PRESETS[name]().replace(**overrides)


def build_model(name: str, **overrides: Any) -> MultiExpertModel:
    """Build a preset with frozen experts (random weights); ``overrides`` replace ModelConfig fields."""
    return MultiExpertModel(get_config(name, **overrides))


@register("cast_b16")
def cast_b16() -> ModelConfig:
    """CAST ViT-B/16: CLIP spatial + VideoMAE temporal experts, S&T B-CA in all 12 layers, one head."""
    return ModelConfig(experts=("spatial", "temporal"), exchanges=(SPATIAL_TEMPORAL,), num_classes=400)


@register("cast_b16_ek100")
def cast_b16_ek100() -> ModelConfig:
    """CAST ViT-B/16 for EPIC-KITCHENS-100: noun head on the spatial feature, verb head on the temporal one."""
    return cast_b16().replace(composition=True)
