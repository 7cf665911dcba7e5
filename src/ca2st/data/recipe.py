"""The input recipe of a model: how a video becomes the clip tensors the model was trained on.

A trained model carries its recipe (in our checkpoint's ``config.json``), so that ``predict``, ``eval`` and a
user run it as it was trained without repeating the sampler, the number of test views or the normalisation.
The recipe is a plain record; ``ca2st.engine.data`` builds the samplers and transforms from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["InputRecipe", "IMAGENET_MEAN", "IMAGENET_STD", "SAMPLERS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLERS = ("segment", "dense")
MODES = ("official", "native")


@dataclass(frozen=True)
class InputRecipe:
    """Sampler, clip length and views, image size, normalisation and audio length of a model's input.

    ``sampler``: ``'segment'`` (one frame from each of ``num_frames`` equal parts: SSV2, EK100) or ``'dense'``
    (``num_frames`` frames ``sampling_rate`` apart: Kinetics and the audio-visual sets). ``mode``: ``'official'``
    (the official CAST loaders' frames, views and resize, :mod:`ca2st.data.official_sampling`) or ``'native'``
    (:mod:`ca2st.data.sampling`: any number of evenly spaced test views, rounded resize). ``test_clips`` ×
    ``test_crops`` views per video at test time. ``mean``/``std``: RGB normalisation of [0, 1] pixels.
    ``audio_frames``: log-mel frames per clip for audio models, ``None`` without an audio expert.
    """

    sampler: str = "dense"
    mode: str = "official"
    num_frames: int = 16
    sampling_rate: int = 4
    test_clips: int = 1
    test_crops: int = 1
    img_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    audio_frames: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        if self.mode not in MODES:
            raise ConfigError(f"input recipe: mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"input recipe: sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        for name in ("num_frames", "sampling_rate", "test_clips", "test_crops", "img_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"input recipe: {name} must be a positive integer, got {value!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"input recipe: mean and std need 3 values (std > 0), got {self.mean}, {self.std}")

    @classmethod
    def for_model(cls, config, **fields: Any) -> InputRecipe:
        """The recipe of a model config (frames, image size, audio frames from it) with ``fields`` set."""
        audio = config.audio_frames if "audio" in config.experts else None
        return cls(num_frames=config.num_frames, img_size=config.img_size, audio_frames=audio, **fields)

    @property
    def num_views(self) -> int:
        return self.test_clips * self.test_crops

    def replace(self, **fields: Any) -> InputRecipe:
        """A copy with ``fields`` changed (``None`` values are ignored, so unset command-line flags pass through)."""
        fields = {k: v for k, v in fields.items() if v is not None}
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown input recipe field(s) {unknown}; valid: {self.field_names()}")
        return dataclasses.replace(self, **fields)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "input recipe") -> InputRecipe:
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{where}: unknown input recipe field(s) {unknown}; valid: {cls.field_names()}")
        return cls(**data)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
