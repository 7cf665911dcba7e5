"""Model configuration: one dataclass describes every CAST / CAVA / CA²ST variant."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .experts.archs import KINDS as EXPERT_KINDS
from .experts.archs import arch_names

FUSIONS = ("sequential", "parallel")
RETIRED_FIELDS = ("grad_checkpointing",)  # read from older checkpoints, ignored


@dataclass(frozen=True)
class ExchangeSpec:
    """A B-CA between experts ``a`` and ``b``: a attends b in ``window_a``, b attends a in ``window_b``,
    in the listed layers."""

    a: str
    b: str
    window_a: str
    window_b: str
    layers: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.a}_{self.b}"


@dataclass
class ModelConfig:
    """Architecture of a multi-expert model. Every field can be overridden by ``build_model``."""

    experts: tuple[str, ...] = ("spatial", "temporal")
    spatial_arch: str = "clip"  # an expert architecture (models/experts/archs.py), e.g. "resnet50"
    temporal_arch: str = "videomae"
    audio_arch: str = "ast"
    spatial_patch_size: int | None = None  # None: patch_size (e.g. 14 for DINOv2)
    own_normalization: bool = False  # each video expert gets its own mean/std (False: the input recipe's, as CAST)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    exchange_heads: int | None = None  # None: num_heads
    mlp_ratio: float = 4.0
    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    audio_frames: int = 400  # log-mel frames L of the audio input (B, L, num_mel_bins)
    num_mel_bins: int = 128
    audio_stride: int = 10  # AST patch stride on both spectrogram axes
    audio_layers: int | tuple[int, ...] | None = None  # None: all layers; n: the last n; or explicit indices
    fusion: str = "sequential"  # exchanges of a layer one after another, or "parallel": averaged updates
    share_bottleneck: bool = False  # each expert reuses one down/up projection per layer across its exchanges
    time_encoding: bool = False  # absolute-time MLP codes added inside the audio exchanges
    adapter_ratio: float = 0.25
    bottleneck_ratio: float = 0.5
    num_classes: int = 400
    composition: bool = False
    composition_classes: dict[str, int] = field(default_factory=lambda: {"verb": 97, "noun": 300})
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0

    def __post_init__(self) -> None:
        self.experts = tuple(self.experts)
        if isinstance(self.audio_layers, list):
            self.audio_layers = tuple(self.audio_layers)
        self.validate()

    def validate(self) -> None:
        for name in ("embed_dim", "depth", "num_heads", "img_size", "patch_size", "num_frames", "tubelet_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model config: {name} must be a positive integer, got {value!r}")
        unknown = [e for e in self.experts if e not in EXPERT_KINDS]
        if unknown:
            raise ConfigError(f"model config: unknown experts {unknown}; known: {list(EXPERT_KINDS)}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"model config: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        bottleneck = int(self.embed_dim * self.bottleneck_ratio)
        if bottleneck % self.heads_in_exchanges:
            raise ConfigError(
                f"model config: exchange width {bottleneck} (embed_dim × bottleneck_ratio) is not "
                f"divisible by {self.heads_in_exchanges} exchange heads; set exchange_heads"
            )
        for name in ("patch_size", "spatial_patch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0 or self.img_size % value):
                raise ConfigError(f"model config: img_size {self.img_size} is not a multiple of {name} {value!r}")
        if self.num_frames % self.tubelet_size:
            raise ConfigError(
                f"model config: num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet_size}"
            )
        if len(set(self.experts)) != len(self.experts) or not self.experts:
            raise ConfigError(f"model config: experts must name different experts, got {self.experts}")
        for name, value, allowed in (
            *((f"{kind}_arch", getattr(self, f"{kind}_arch"), arch_names(kind)) for kind in EXPERT_KINDS),
            ("fusion", self.fusion, FUSIONS),
        ):
            if value not in allowed:
                raise ConfigError(f"model config: {name} must be one of {list(allowed)}, got {value!r}")
        if "audio" in self.experts and self.audio_frames < 16:
            raise ConfigError(f"model config: audio_frames must be at least 16 (one patch), got {self.audio_frames}")
        self.audio_layer_indices()
        if not self.composition and (not isinstance(self.num_classes, int) or self.num_classes <= 0):
            raise ConfigError(f"model config: num_classes must be a positive integer, got {self.num_classes!r}")

    def audio_layer_indices(self) -> tuple[int, ...]:
        """Layers that carry the audio exchanges."""
        value = self.audio_layers
        if value is None:
            return tuple(range(self.depth))
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= self.depth:
                raise ConfigError(f"model config: audio_layers={value} must lie in 0..{self.depth} (the last n layers)")
            return tuple(range(self.depth - value, self.depth))
        layers = tuple(value)
        bad = [i for i in layers if not isinstance(i, int) or not 0 <= i < self.depth]
        if bad:
            raise ConfigError(f"model config: audio_layers names layers {bad} outside 0..{self.depth - 1}")
        return layers

    def exchange_plan(self) -> tuple[ExchangeSpec, ...]:
        """The exchanges and their layers, in the order a layer runs them: S&T, then A&S, then A&T.

        S&T: spatial queries temporal along time, temporal queries spatial along space (CAST), in every
        layer (or, with a ResNet spatial expert, after each of its four stages). Audio exchanges attend
        globally, in ``audio_layers``.
        """
        plan = []
        if "spatial" in self.experts and "temporal" in self.experts:
            st_layers = tuple(range(self.depth))
            if self.spatial_arch == "resnet50":
                st_layers = resnet_stage_layers(self.depth)
            plan.append(ExchangeSpec("spatial", "temporal", "time", "space", st_layers))
        for other in ("spatial", "temporal"):
            if "audio" in self.experts and other in self.experts:
                plan.append(ExchangeSpec("audio", other, "global", "global", self.audio_layer_indices()))
        return tuple(plan)

    @property
    def heads_in_exchanges(self) -> int:
        return self.exchange_heads or self.num_heads

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with ``overrides``; unknown keys raise ConfigError naming them."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) {unknown}; valid options: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """A config saved by :meth:`to_dict`; older files' ``grad_checkpointing`` (now a setting of the
        run, :meth:`MultiExpertModel.set_grad_checkpointing`) is dropped."""
        data = {k: v for k, v in data.items() if k not in RETIRED_FIELDS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) {unknown}; valid options: {sorted(known)}")
        return cls(**data)


def resnet_stage_layers(depth: int) -> tuple[int, ...]:
    """Temporal layers after which the four ResNet stages run: 2, 5, 8, 11 for depth 12 (every depth/4-th)."""
    if depth % 4:
        raise ConfigError(f"model config: a ResNet-50 spatial expert needs a depth divisible by 4, got {depth}")
    step = depth // 4
    return tuple(step * (k + 1) - 1 for k in range(4))
