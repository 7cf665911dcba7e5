"""Run configuration: dataclasses filled from a YAML recipe plus ``section.key=value`` overrides.

Unknown keys are errors that name the key. ``${VAR}`` in a string value is read from the environment;
expert weight paths default to ``CLIP_PATH``, ``VMAE_PATH``, ``AST_PATH`` (and ``RESNET_PATH``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..checkpoints.experts import EXPERT_ENV
from ..errors import ConfigError
from ..models.registry import get_config


@dataclass
class DataConfig:
    """Annotation files and loading. ``options`` go to the annotation parser (e.g. ``classes``)."""

    format: str | None = None  # parser name; guessed from the file when None
    train: str | None = None
    val: str | None = None
    root: str | None = None
    audio_root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # parser options for both splits
    train_options: dict[str, Any] = field(default_factory=dict)  # added for data.train (e.g. split: train)
    val_options: dict[str, Any] = field(default_factory=dict)  # added for data.val
    # sampling and test views; None: the evaluated checkpoint's recorded recipe, else the format's sampler, 4, 2, 3
    sampler: str | None = None  # "segment" or "dense"
    sampling_rate: int | None = None
    test_clips: int | None = None
    test_crops: int | None = None
    flip: bool | None = None  # default: the format's (off for SSV2)
    rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1"
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random-resized-crop area fraction (the official range)
    color_jitter: float = 0.0
    erase_prob: float = 0.0
    audio_window: str = "sample"
    spec_augment: bool = False
    batch_size: int = 6
    eval_batch_size: int | None = None
    num_workers: int = 4
    sample_timeout: float = 600.0  # seconds a sample may take in a loader worker, then a DataError names it; 0: none
    on_error: str = "error"  # training: "error" or "skip"; evaluation always reports exclusions
    missing_audio: str = "error"


@dataclass
class OptimConfig:
    """Optimisation. ``lr``, ``min_lr`` are per 256 clips: the run multiplies them by total batch / 256."""

    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    epochs: int = 50
    warmup_epochs: float = 5.0
    update_freq: int = 1  # gradient accumulation steps
    clip_grad: float | None = None
    label_smoothing: float = 0.1
    mixup: float = 0.8  # mixup alpha (0: off)
    cutmix: float = 0.0  # cutmix alpha (0: off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.0
    mixup_audio: bool = True  # mix spectrograms with the same lambda and partner as the video
    ema: float | None = None  # EMA decay of the trainable weights, e.g. 0.9999


@dataclass
class RunConfig:
    """Everything one ``ca2st train`` / ``ca2st eval`` needs."""

    model: dict[str, Any] = field(default_factory=lambda: {"name": "cast_b16"})
    experts: dict[str, str | None] = field(default_factory=dict)
    random_experts: bool = False  # allow experts without weight files (smoke tests, pre-training)
    freeze_experts: bool = True  # False: the experts train too (pre-training or full fine-tuning)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output_dir: str = "runs/ca2st"
    seed: int = 0
    device: str = "auto"
    precision: str = "bf16"  # "fp32", "bf16" (autocast) or "fp16" (autocast + grad scaler, GPU only)
    compile: bool = False
    grad_checkpointing: bool = False
    resume: str | None = "auto"  # "auto": the latest valid checkpoint in output_dir; a path; or None
    checkpoint: str | None = None  # weights to evaluate / start from (our checkpoint or an official CAST one)
    eval_every: int = 1  # epochs
    save_every_steps: int = 0  # extra checkpoints every N optimizer steps (0: at epoch ends only)
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True

    def model_config(self):
        """The ModelConfig this run builds (preset plus overrides; unknown keys raise ConfigError)."""
        options = dict(self.model)
        name = options.pop("name", None)
        if not name:
            raise ConfigError("config key model.name is required (a preset such as cast_b16)")
        return name, get_config(name, **options)

    def expert_paths(self) -> dict[str, str]:
        """Expert weight files: the config's, else the environment's (CLIP_PATH, VMAE_PATH, AST_PATH)."""
        out = {}
        for kind, env in EXPERT_ENV.items():
            value = self.experts.get(kind) or os.environ.get(env)
            if value:
                out[kind] = value
        unknown = sorted(set(self.experts) - set(EXPERT_ENV))
        if unknown:
            raise ConfigError(f"unknown config key(s) experts.{unknown[0]}; experts has {sorted(EXPERT_ENV)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any] | Sequence[str]) -> "RunConfig":
        """A copy with ``overrides`` applied (as for :func:`load_config`)."""
        return _from_dict(apply_overrides(self.to_dict(), overrides))


_ENV = re.compile(r"\$\{(\w+)\}")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
RECIPES = Path(__file__).resolve().parents[1] / "configs"  # the recipes shipped inside the package


def _expand(value: Any) -> Any:
    if isinstance(value, str):

        def sub(m):
            if m.group(1) not in os.environ:
                raise ConfigError(f"config value {value!r} needs the environment variable {m.group(1)}")
            return os.environ[m.group(1)]

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or 'top level'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(
                f"unknown config key {name}; valid keys{' in ' + where if where else ''}: {sorted(fields)}"
            )
        sub = fields[key].type
        target = {"DataConfig": DataConfig, "OptimConfig": OptimConfig}.get(sub if isinstance(sub, str) else "")
        kwargs[key] = _build(target, value, name) if target else _check_type(name, fields[key], value)
    return cls(**kwargs)


def _check_type(name: str, f: dataclasses.Field, value: Any) -> Any:
    kind = str(f.type)
    if value is None:
        if "None" not in kind:
            raise ConfigError(f"config key {name} cannot be null")
        return value
    if kind.startswith(("int", "float")) and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads exponents without a dot (5e-4) as strings
    if kind.startswith(("int", "float")) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"config key {name} must be a number, got {value!r}")
    if kind.startswith("int") and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"config key {name} must be an integer, got {value!r}")
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    if kind.startswith("bool") and not isinstance(value, bool):
        raise ConfigError(f"config key {name} must be true or false, got {value!r}")
    if kind.startswith("tuple"):
        return tuple(value)
    return value


def parse_value(text: str) -> Any:
    """A command-line value: YAML scalar/list/dict syntax (``1e-3``, ``true``, ``[1, 2]``, ``null``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads exponents without a dot (5e-4) as strings
    return value


def parse_overrides(overrides: dict[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Overrides as ``{dotted.key: value}``: ``key=value`` strings (values in YAML syntax) or a dict whose keys
    are dotted paths and whose values are taken as they are. The one parser of the CLI and of Python callers."""
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return {str(k): v for k, v in overrides.items()}
    if isinstance(overrides, str):
        overrides = [overrides]
    out = {}
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        out[key] = parse_value(text)
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Apply overrides (see :func:`parse_overrides`) to a raw config dict."""
    data = dict(data)
    for key, value in parse_overrides(overrides).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return data


def recipe_path(recipe: str | Path) -> Path:
    """A recipe's YAML file: an existing path, or the name of a recipe shipped with the package."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES / f"{Path(str(recipe)).stem}.yaml"
    if path.suffix not in (".yaml", ".yml") and shipped.is_file():
        return shipped
    names = ", ".join(list_recipes())
    raise ConfigError(f"{recipe}: no such config file, nor a recipe of that name (recipes: {names})")


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``ca2st train NAME`` takes them)."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load_config(recipe: str | Path | None = None, overrides: dict[str, Any] | Sequence[str] | None = None) -> RunConfig:
    """A RunConfig from a recipe (a YAML path or a shipped recipe name such as ``cast_ssv2``; ``None``: the
    defaults) and overrides (``key=value`` strings or a ``{dotted.key: value}`` dict)."""
    data: dict[str, Any] = {}
    if recipe is not None:
        path = recipe_path(recipe)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections")
    return _from_dict(_expand(apply_overrides(data, overrides)))


def _from_dict(data: dict[str, Any]) -> RunConfig:
    if isinstance(data.get("model"), dict):
        data["model"] = {**RunConfig().model, **data["model"]}
    cfg = _build(RunConfig, data, "")
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"config key precision must be fp32, bf16 or fp16, got {cfg.precision!r}")
    if cfg.optim.update_freq < 1:
        raise ConfigError(f"config key optim.update_freq must be at least 1, got {cfg.optim.update_freq}")
    cfg.model_config()  # validates model.*
    return cfg
