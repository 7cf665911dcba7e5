"""Run configuration: dataclasses filled from a YAML recipe plus ``section.key=value`` overrides.

Unknown keys are errors that name the key. ``${VAR}`` in a string value is read from the environment;
expert weight paths default to ``CLIP_PATH``, ``VMAE_PATH``, ``AST_PATH`` (and ``RESNET_PATH``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from ..checkpoints.experts import EXPERT_ENV, expert_file
from ..errors import ConfigError
from ..models.registry import get_config
from .config_rules import RULES


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
    # sampling and test views; None: the evaluated checkpoint's recorded recipe, else the format's sampler, official,
    # 4, 2, 3
    sampler: str | None = None  # "segment" or "dense"
    input_mode: str | None = None  # "official" (the official loaders' frames and views) or "native"
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
    decoder: str = "pyav"  # "pyav" (the reference) or "torchcodec" (optional; ca2st.data.decoders)
    transfer: str = "uint8"  # clips leave the workers as "uint8" pixels (normalised on the device) or "float"
    sample_timeout: float = 600.0  # seconds a sample may take in a loader worker, then a DataError names it; 0: none
    on_error: str = "error"  # training: "error" or "skip"; evaluation always reports exclusions
    missing_audio: str = "error"
    # where videos' frame indexes are kept on disk: "auto" (.ca2st-index beside the annotation file), a folder, null
    index_cache: str | None = "auto"


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
    eval_precision: str = (
        "auto"  # ca2st eval: "auto" (fp32 on CPU, fp16 on GPU as the official test), or fp32/bf16/fp16
    )
    exact_fp32: bool = False  # CUDA fp32 matmuls in IEEE fp32 rather than TF32 (ca2st.precision)
    dist_backend: str = "auto"  # torchrun's process group: "auto" (nccl on GPU, gloo on CPU) or a torch backend
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
    progress_label: str | None = None  # the training bar's label (default "train"), e.g. "cava (5/9)"

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
        for kind in EXPERT_ENV:
            value = expert_file(kind, self.experts.get(kind))
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
_NONFINITE = re.compile(r"[-+]?(nan|inf|infinity)", re.IGNORECASE)
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
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(
                f"unknown config key {name}; valid keys{' in ' + where if where else ''}: {sorted(fields)}"
            )
        hint = hints[key]
        kwargs[key] = _build(hint, value, name) if dataclasses.is_dataclass(hint) else _typed(name, hint, value)
    return cls(**kwargs)


def _typed(name: str, hint: Any, value: Any) -> Any:
    """``value`` as the annotated type ``hint`` (YAML numbers as int or float, lists as tuples), or a ConfigError
    naming the key. Floats must be finite."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if value is None:
        if type(None) not in options:
            raise ConfigError(f"config key {name} cannot be null")
        return None
    hint = next(o for o in options if o is not type(None))  # each field has one type besides None
    kind = get_origin(hint) or hint
    text = value.strip() if isinstance(value, str) else ""
    if kind in (int, float) and (_NUMBER.fullmatch(text) or _NONFINITE.fullmatch(text)):
        value = float(value)  # YAML 1.1 reads exponents without a dot (5e-4), and nan and inf, as strings
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key {name} must be a finite number, got {value!r}")
        if kind is int and not float(value).is_integer():
            raise ConfigError(f"config key {name} must be an integer, got {value!r}")
        return kind(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {name} must be true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        quote = f" (quote it in YAML: '{value}')" if isinstance(value, (int, float)) else ""
        raise ConfigError(f"config key {name} must be a string, got {value!r}{quote}")
    if kind is dict and not isinstance(value, dict):
        raise ConfigError(f"config key {name} must be a mapping (key: value), got {value!r}")
    if kind is tuple:
        items = get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConfigError(f"config key {name} must be a list of {len(items)} values, got {value!r}")
        return tuple(_typed(name, item, v) for item, v in zip(items, value))
    return value


def config_keys(cls: type | None = None, where: str = "") -> dict[str, Any]:
    """Every leaf key of the run config (``data.batch_size``, ...) and its annotated type."""
    out = {}
    for key, hint in get_type_hints(cls or RunConfig).items():
        name = f"{where}.{key}" if where else key
        out.update(config_keys(hint, name) if dataclasses.is_dataclass(hint) else {name: hint})
    return out


def validate(cfg: "RunConfig") -> None:
    """Check every value of ``cfg`` against :data:`RULES` and its model options; a ConfigError names the key."""
    for name, rule in RULES.items():
        value = cfg
        for part in name.split("."):
            value = getattr(value, part)
        if value is not None and not rule.ok(value):
            raise ConfigError(f"config key {name} must be {rule.wants}, got {value!r}")
    cfg.model_config()  # validates model.*


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
    if path.is_dir():
        raise ConfigError(f"{recipe}: a folder, not a config file; give a YAML recipe (e.g. configs/smoke.yaml)")
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
    validate(cfg)
    return cfg
