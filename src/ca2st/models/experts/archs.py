"""Expert architectures by name: what ``spatial_arch``, ``temporal_arch`` and ``audio_arch`` of a model config build.

An :class:`ExpertArch` names an :class:`~ca2st.models.experts.base.Expert` subclass, the function that builds it
from a :class:`~ca2st.models.config.ModelConfig`, and the released weight layouts it reads (each a
:class:`WeightFormat`: a detector and a converter to the expert's own parameter names, used by
:func:`ca2st.checkpoints.experts.load_expert_weights`).

Adding an expert takes one module under ``ca2st/models/experts/`` (the Expert subclass honouring the contract of
:mod:`~ca2st.models.experts.base`, its ``build`` function and its weight formats, declared with
:mod:`~ca2st.models.experts.building`) and one entry in :data:`ARCHS` below; presets then name it
(``spatial_arch="..."``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import dinov2, siglip2, videomae, videomae2
from .ast import ASTExpert
from .base import Expert
from .building import WeightFormat, common_options, frame_options, spatial_patch
from .clip import CLIPExpert
from .resnet import ResNetExpert
from .videomae import VideoMAEExpert

__all__ = ["ExpertArch", "ARCHS", "KINDS", "arch_names", "build_expert", "get_arch"]

KINDS = ("spatial", "temporal", "audio")


@dataclass(frozen=True)
class ExpertArch:
    """An expert architecture: its ``kind`` (the role it plays), class, builder ``build(config, drop_path_rates)``
    and weight ``formats`` (the formats of the four original experts are listed in
    :mod:`ca2st.checkpoints.experts`)."""

    name: str
    kind: str
    cls: type[Expert]
    build: Callable[[Any, list[float]], Expert]
    formats: tuple[WeightFormat, ...] = ()


def _clip(cfg, rates):
    return CLIPExpert(patch_size=spatial_patch(cfg), **frame_options(cfg), **common_options(cfg, rates))


def _resnet(cfg, rates):
    from ..config import resnet_stage_layers  # the config module imports this one

    return ResNetExpert(stage_layers=resnet_stage_layers(cfg.depth), **frame_options(cfg))


def _ast(cfg, rates):
    return ASTExpert(
        num_mel_bins=cfg.num_mel_bins,
        num_frames=cfg.audio_frames,
        patch_size=cfg.patch_size,
        stride=cfg.audio_stride,
        **common_options(cfg, rates),
    )


ARCHS: dict[str, ExpertArch] = {
    arch.name: arch
    for arch in (
        ExpertArch("clip", "spatial", CLIPExpert, _clip),
        ExpertArch("resnet50", "spatial", ResNetExpert, _resnet),
        ExpertArch("videomae", "temporal", VideoMAEExpert, videomae.build),
        ExpertArch("ast", "audio", ASTExpert, _ast),
        ExpertArch("videomae2", "temporal", videomae2.VideoMAE2Expert, videomae2.build, (videomae2.HUB_FORMAT,)),
        ExpertArch("siglip2", "spatial", siglip2.SigLIP2Expert, siglip2.builder("map"), siglip2.FORMATS),
        # the same class: siglip2's formats serve it
        ExpertArch("siglip2_mean", "spatial", siglip2.SigLIP2Expert, siglip2.builder("mean")),
        ExpertArch("dinov2", "spatial", dinov2.DINOv2Expert, dinov2.build, dinov2.FORMATS),
        ExpertArch("dinov2_reg", "spatial", dinov2.DINOv2Expert, dinov2.build_with_registers, dinov2.FORMATS),
    )
}


def arch_names(kind: str) -> tuple[str, ...]:
    """The architectures that can play ``kind``."""
    return tuple(name for name, arch in ARCHS.items() if arch.kind == kind)


def get_arch(cfg, kind: str) -> ExpertArch:
    """The architecture a config names for ``kind`` (``<kind>_arch``)."""
    return ARCHS[getattr(cfg, f"{kind}_arch")]


def build_expert(kind: str, cfg, drop_path_rates: list[float]) -> Expert:
    """The ``kind`` expert of a model config, with its per-layer drop-path rates."""
    return get_arch(cfg, kind).build(cfg, drop_path_rates)
