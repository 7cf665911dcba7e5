"""Presets: named ModelConfigs. ``build_model(name, **overrides)`` is the public entry point."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from .config import ModelConfig
from .multiexpert import MultiExpertModel

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}


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


def _with_composition(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    return lambda: fn().replace(composition=True)


@register("cast_b16")
def cast_b16() -> ModelConfig:
    """CAST ViT-B/16: CLIP spatial + VideoMAE temporal experts, S&T B-CA in all 12 layers, one head."""
    return ModelConfig(experts=("spatial", "temporal"), num_classes=400)


@register("cava_b16")
def cava_b16() -> ModelConfig:
    """CAVA: CLIP spatial + AST audio experts, A&S B-CA (global windows) with time codes in all 12 layers."""
    return ModelConfig(experts=("spatial", "audio"), audio_layers=None, time_encoding=True, num_classes=400)


@register("ca2st_b16")
def ca2st_b16() -> ModelConfig:
    """CA²ST: spatial, temporal and audio experts; S&T in every layer, A&S then A&T in the last 3 layers,
    each expert's projections shared across its exchanges of a layer, time codes on."""
    return ModelConfig(
        experts=("spatial", "temporal", "audio"),
        audio_layers=3,
        share_bottleneck=True,
        time_encoding=True,
        num_classes=400,
    )


@register("cast_r50_b16")
def cast_r50_b16() -> ModelConfig:
    """CAST with a ResNet-50 spatial expert: its four stages interleaved with VideoMAE layers 2, 5, 8, 11."""
    return ModelConfig(experts=("spatial", "temporal"), spatial_arch="resnet50", num_classes=400)


@register("cast_vmae2_b16")
def cast_vmae2_b16() -> ModelConfig:
    """CAST with a VideoMAE V2 ViT-B temporal expert (e.g. the K710 model distilled from ViT-g): CLIP spatial,
    S&T B-CA in all 12 layers. VideoMAE V2 was trained on ImageNet-normalised input, as the official presets."""
    return ModelConfig(experts=("spatial", "temporal"), temporal_arch="videomae2", num_classes=400)


@register("cast_siglip2_b16")
def cast_siglip2_b16() -> ModelConfig:
    """CAST with a SigLIP 2 ViT-B/16 spatial expert (attention-pooled; ``spatial_arch="siglip2_mean"`` for the
    token mean) + VideoMAE temporal; each expert normalised with its own statistics (SigLIP's are 0.5/0.5)."""
    return ModelConfig(experts=("spatial", "temporal"), spatial_arch="siglip2", own_normalization=True, num_classes=400)


@register("cast_dinov2_b14")
def cast_dinov2_b14() -> ModelConfig:
    """CAST with a DINOv2 ViT-B/14 spatial expert (16×16 patches at 224 px) + VideoMAE-B/16: the S&T time window
    lays VideoMAE's 14×14 keys on DINOv2's 16×16 queries by nearest neighbour. Both experts take ImageNet
    statistics."""
    return ModelConfig(experts=("spatial", "temporal"), spatial_arch="dinov2", spatial_patch_size=14, num_classes=400)


@register("cast_dinov2_reg_b14")
def cast_dinov2_reg_b14() -> ModelConfig:
    """``cast_dinov2_b14`` with DINOv2 with registers (4 register tokens beside the class token)."""
    return cast_dinov2_b14().replace(spatial_arch="dinov2_reg")


for _name in (
    "cast_b16",
    "cava_b16",
    "ca2st_b16",
    "cast_r50_b16",
    "cast_vmae2_b16",
    "cast_siglip2_b16",
    "cast_dinov2_b14",
    "cast_dinov2_reg_b14",
):
    register(f"{_name}_ek100")(_with_composition(_PRESETS[_name]))
