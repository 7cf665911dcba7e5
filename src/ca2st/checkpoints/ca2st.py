"""Our own checkpoint format: a folder with the weights as safetensors and one JSON model record.

::

    model.safetensors   the trainable weights (or every weight, with include_experts)
    config.json         the model record (below)

``config.json`` holds everything needed to rebuild and run the model without the training code::

    {"format": "ca2st", "format_version": 2,
     "model_name": "cast_b16",                       # preset it was built from ("custom" when unknown)
     "model": {...},                                 # ModelConfig fields
     "tasks": {"class": 174} | {"verb": 97, "noun": 300},
     "class_names": {"class": [...]} | null,         # per task, like Hugging Face's id2label
     "input": {...},                                 # InputRecipe: sampler, frames, views, size, normalisation
     "experts": {"spatial": "ViT-B-16.pt", ...},     # expert weight files, when not stored inside
     "expert_files": {"spatial": {"name", "source", "sha256"}, ...},  # shareable folders: checked on load
     "include_experts": false,
     "run": {...}, "meta": {...}}                    # the training run's config and e.g. epoch / metrics

Folders of format version 1 (without ``tasks``, ``class_names`` and ``input``) load with unknown class names and
the default recipe. A folder is written into a hidden temporary folder, every file fsynced, then renamed into
place and the parent fsynced: it exists complete or not at all. Training checkpoints add ``state.pt``
(:mod:`ca2st.engine.checkpointing`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.recipe import InputRecipe
from ..errors import CheckpointError, ConfigError
from ..models import ModelConfig, MultiExpertModel
from .experts import EXPERT_ENV, expert_file, load_expert_weights
from .official_cast import load_official_cast

__all__ = [
    "save_model",
    "load_model",
    "load_any",
    "load_weights",
    "read_record",
    "is_model_folder",
    "write_model_folder",
    "atomic_directory",
    "trainable_state",
    "recorded_recipe",
    "read_weights",
    "apply_weights",
]

WEIGHTS = "model.safetensors"
RECORD = "config.json"
FORMAT_VERSION = 2


def is_model_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder in our format (weights and record present)."""
    path = Path(path)
    return (path / WEIGHTS).is_file() and (path / RECORD).is_file()


def trainable_state(model: nn.Module, include_experts: bool = False) -> dict[str, torch.Tensor]:
    """The weights a folder stores: the trainable ones, or all with ``include_experts``."""
    names = {n for n, p in model.named_parameters() if p.requires_grad or include_experts}
    if include_experts:
        names |= set(model.state_dict())
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k in names}


def model_record(
    model: MultiExpertModel,
    *,
    model_name: str = "custom",
    experts: dict[str, str] | None = None,
    expert_files: dict[str, dict[str, str]] | None = None,
    include_experts: bool = False,
    run: dict | None = None,
    meta: dict | None = None,
) -> dict[str, Any]:
    """The ``config.json`` content for ``model``."""
    return {
        "format": "ca2st",
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model": model.config.to_dict(),
        "tasks": model.tasks,
        "class_names": model.class_names,
        "input": model.input_recipe.to_dict(),
        "experts": dict(experts or {}),
        "expert_files": dict(expert_files or {}),
        "include_experts": include_experts,
        "run": run or {},
        "meta": meta or {},
    }


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``directory``; on success fsync its files and rename it into
    place (replacing an existing ``directory``), on failure remove it. A failed write (disk full, no permission)
    raises :class:`CheckpointError` naming the folder, the reason and the free space."""
    directory = Path(directory)
    tmp = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        yield tmp
        for child in tmp.iterdir():
            _fsync(child)
        _fsync(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
        _fsync(directory.parent)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            raise CheckpointError(write_failure(directory, err)) from err
        raise


def write_failure(path: Path, err: BaseException) -> str:
    """What a user needs to know about a failed write: the path, the reason and the space left on its disk."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else f"the write stopped short: {err}"
    probe = next((p for p in (path, *path.parents) if p.exists()), None)
    free = f"; {shutil.disk_usage(probe).free / 2**30:.2f} GiB free on its disk" if probe is not None else ""
    return f"{path}: cannot write it ({reason}){free}. Free space, fix the permissions, or choose another folder"


def write_model_folder(
    directory: str | Path,
    model: nn.Module,
    *,
    extra_files: dict[str, Callable[[Path], Any]] | None = None,
    include_experts: bool = False,
    **record: Any,
) -> Path:
    """Write weights and record (``record`` as for :func:`model_record`) atomically; ``extra_files`` maps file
    names to writers ``(path) -> None`` that add files to the same folder. Returns the folder."""
    model = getattr(model, "module", model)
    with atomic_directory(directory) as tmp:
        save_file(trainable_state(model, include_experts), str(tmp / WEIGHTS))
        content = model_record(model, include_experts=include_experts, **record)
        (tmp / RECORD).write_text(json.dumps(content, indent=2, default=str))
        for name, writer in (extra_files or {}).items():
            writer(tmp / name)
    return Path(directory)


def save_model(
    model: nn.Module,
    path: str | Path,
    experts: dict[str, str] | None = None,
    include_experts: bool | None = None,
    model_name: str = "custom",
) -> Path:
    """Save a model for :func:`load_model`: its trainable weights (plus every weight when ``include_experts``,
    the default when no expert weight files are named), its config, tasks, class names and input recipe."""
    if include_experts is None:
        include_experts = not experts
    return write_model_folder(path, model, experts=experts, include_experts=include_experts, model_name=model_name)


def read_record(path: str | Path) -> dict[str, Any]:
    """The model record (``config.json``) of one of our folders."""
    path = Path(path)
    if not is_model_folder(path):
        raise CheckpointError(f"{path}: not a ca2st checkpoint folder (needs {WEIGHTS} and {RECORD})")
    try:
        record = json.loads((path / RECORD).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path / RECORD}: not valid JSON ({err})") from err
    if not isinstance(record, dict) or not isinstance(record.get("model"), dict):
        raise CheckpointError(f"{path / RECORD}: not a ca2st model record (no 'model' section)")
    return record


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a folder's ``model.safetensors`` (a damaged file raises :class:`CheckpointError` naming it)."""
    file = Path(path) / WEIGHTS
    try:
        return load_file(str(file))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{file}: not a readable safetensors file ({err})") from err


def apply_weights(model: nn.Module, weights: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load folder weights into ``model``: every stored key must exist, and every trainable weight be stored."""
    own = model.state_dict()
    unexpected = sorted(k for k in weights if k not in own)
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in weights)
    mismatched = sorted(
        f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and v.shape != own[k].shape
    )
    if unexpected or missing or mismatched:
        raise CheckpointError(
            f"{where}: does not fit the model — missing {missing[:10]}, unexpected "
            f"{unexpected[:10]}, shape mismatches {mismatched[:10]}"
        )
    model.load_state_dict(weights, strict=False)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a folder's weights into ``model`` (:func:`read_weights`, then :func:`apply_weights`)."""
    apply_weights(model, read_weights(path), path)


def apply_record(model: MultiExpertModel, record: dict[str, Any], where: str) -> None:
    """Set the class names and input recipe stored in ``record`` on ``model`` (version 1 records have none)."""
    try:
        if record.get("input"):
            model.input_recipe = InputRecipe.from_dict(record["input"], where)
        model.class_names = record.get("class_names")
    except ConfigError as err:
        raise CheckpointError(f"{where}: {err}") from err


def recorded_recipe(path: str | Path) -> InputRecipe | None:
    """The input recipe one of our folders recorded, or ``None`` (another format, or a version 1 folder)."""
    if not is_model_folder(path):
        return None
    data = read_record(path).get("input")
    return InputRecipe.from_dict(data, str(Path(path) / RECORD)) if data else None


def load_model(path: str | Path, experts: dict[str, str] | None = None, **overrides: Any) -> MultiExpertModel:
    """Rebuild a model from one of our folders, in eval mode, with its class names and input recipe.

    Expert weight files come from ``experts`` (kind -> path), else from the record, else from CLIP_PATH /
    VMAE_PATH / AST_PATH; a folder saved with its expert weights needs none. ``overrides`` replace
    ModelConfig fields.
    """
    record = read_record(path)
    try:
        config = ModelConfig.from_dict(record["model"]).replace(**overrides)
    except ConfigError as err:
        raise CheckpointError(f"{Path(path) / RECORD}: {err}") from err
    model = MultiExpertModel(config).eval()
    apply_record(model, record, str(Path(path) / RECORD))
    if not record.get("include_experts"):
        paths = {**record.get("experts", {}), **(experts or {})}
        for kind in model.experts:
            source = expert_file(kind, paths.get(kind))
            if not source:
                raise CheckpointError(
                    f"{path}: holds only the trainable weights; the {kind} expert's weights are "
                    f"needed too: pass experts={{'{kind}': file}} or set "
                    f"{EXPERT_ENV.get(kind, 'the path')}"
                )
            load_expert_weights(model, source, expert=kind)
    load_weights(model, path)
    return model


def load_any(path: str | Path, experts: dict[str, str] | None = None, **overrides: Any) -> MultiExpertModel:
    """A trained model in eval mode from one of our folders (:func:`load_model`, with ``experts``) or a
    released official CAST checkpoint (:func:`~ca2st.checkpoints.load_official_cast`, whose head count is not
    stored: ``num_heads``, default 12). ``overrides`` replace ModelConfig fields in both cases."""
    if is_model_folder(path):
        return load_model(path, experts=experts, **overrides)
    return load_official_cast(path, **overrides)
