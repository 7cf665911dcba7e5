"""Model configuration: one dataclass describes every CAST / CAVA / CA²ST variant."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

EXPERT_KINDS = ("spatial", "temporal")


@dataclass(frozen=True)
class ExchangeSpec:
    """A B-CA between experts ``a`` and ``b``: a attends b in ``window_a``, b attends a in ``window_b``.

    ``layers`` lists the layer indices that carry it; ``None`` means every layer.
    """

    a: str
    b: str
    window_a: str
    window_b: str
    layers: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return f"{self.a}_{self.b}"


@dataclass
class ModelConfig:
    """Architecture of a multi-expert model. Every field can be overridden by ``build_model``."""

    experts: tuple[str, ...] = ("spatial", "temporal")
    exchanges: tuple[ExchangeSpec, ...] = (ExchangeSpec("spatial", "temporal", "time", "space"),)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    exchange_heads: int | None = None  # None: num_heads
    mlp_ratio: float = 4.0
    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 16
    tubelet_size: int = 2
    adapter_ratio: float = 0.25
    bottleneck_ratio: float = 0.5
    num_classes: int = 400
    composition: bool = False
    composition_classes: dict[str, int] = field(default_factory=lambda: {"verb": 97, "noun": 300})
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.experts = tuple(self.experts)
        self.exchanges = tuple(e if isinstance(e, ExchangeSpec) else ExchangeSpec(**{
            **e, "layers": None if e.get("layers") is None else tuple(e["layers"])}) for e in self.exchanges)
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
            raise ConfigError(f"model config: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        bottleneck = int(self.embed_dim * self.bottleneck_ratio)
        if bottleneck % self.heads_in_exchanges:
            raise ConfigError(f"model config: exchange width {bottleneck} (embed_dim × bottleneck_ratio) is not "
                              f"divisible by {self.heads_in_exchanges} exchange heads; set exchange_heads")
        if self.img_size % self.patch_size:
            raise ConfigError(f"model config: img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            raise ConfigError(f"model config: num_frames {self.num_frames} is not a multiple of "
                              f"tubelet_size {self.tubelet_size}")
        for spec in self.exchanges:
            if spec.a not in self.experts or spec.b not in self.experts:
                raise ConfigError(f"model config: exchange {spec.name} joins an expert the model does not have "
                                  f"(experts: {list(self.experts)})")
            bad = [i for i in spec.layers or () if not 0 <= i < self.depth]
            if bad:
                raise ConfigError(f"model config: exchange {spec.name} names layers {bad} outside 0..{self.depth - 1}")
        if not self.composition and (not isinstance(self.num_classes, int) or self.num_classes <= 0):
            raise ConfigError(f"model config: num_classes must be a positive integer, got {self.num_classes!r}")

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) {unknown}; valid options: {sorted(known)}")
        return cls(**data)
