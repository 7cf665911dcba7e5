"""Our checkpoints: trainable weights (safetensors) + config (JSON) + training state, written atomically.

A checkpoint is a directory::

    model.safetensors   the trainable weights (or every weight, with include_experts)
    config.json         {"model_name", "model": ModelConfig, "experts": {kind: weight file}, "run": ..., "meta": ...}
    state.pt            optimizer, scheduler, scaler, EMA, RNG and data-order state (training checkpoints only)

It is written into a hidden temporary directory, every file fsynced, then renamed into place (an atomic
step on POSIX file systems) and the parent directory fsynced: a checkpoint directory either exists
complete or not at all. ``state.pt`` is read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError
from ..models import MultiExpertModel, ModelConfig

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, writer) -> None:
    writer(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def trainable_state(model: nn.Module, include_experts: bool = False) -> dict[str, torch.Tensor]:
    """The weights a checkpoint stores: the trainable ones, or all with ``include_experts``."""
    names = {n for n, p in model.named_parameters() if p.requires_grad or include_experts}
    if include_experts:
        names |= set(model.state_dict())
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k in names}


def save_checkpoint(directory: str | Path, model: nn.Module, *, model_name: str, experts: dict[str, str] | None = None,
                    run: dict | None = None, meta: dict | None = None, state: dict | None = None,
                    include_experts: bool = False) -> Path:
    """Write a checkpoint directory atomically; returns its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = trainable_state(model, include_experts)
        _write(tmp / "model.safetensors", lambda p: save_file(weights, str(p)))
        config = {"model_name": model_name, "model": model.config.to_dict(), "experts": experts or {},
                  "include_experts": include_experts, "run": run or {}, "meta": meta or {}}
        _write(tmp / "config.json", lambda p: p.write_text(json.dumps(config, indent=2, default=str)))
        if state is not None:
            _write(tmp / "state.pt", lambda p: torch.save(state, p))
        _fsync_dir(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_model(model: nn.Module, path: str | Path, experts: dict[str, str] | None = None,
               include_experts: bool | None = None) -> Path:
    """Save a model for ``load_model``: its trainable weights (plus every weight when ``include_experts``,
    the default when no expert weight files are named) and its config."""
    if include_experts is None:
        include_experts = not experts
    return save_checkpoint(path, model, model_name="custom", experts=experts, include_experts=include_experts)


def is_valid_checkpoint(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The numbered checkpoint with the most optimizer steps that is complete (has state.pt), or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = []
    for child in output_dir.iterdir():
        m = CHECKPOINT_PATTERN.match(child.name)
        if m and child.is_dir() and is_valid_checkpoint(child) and (child / "state.pt").is_file():
            found.append((int(m.group(1)), child))
    return max(found)[1] if found else None


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent numbered checkpoints."""
    output_dir = Path(output_dir)
    found = sorted((int(m.group(1)), c) for c in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(c.name)))
    for _, path in found[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not is_valid_checkpoint(path):
        raise CheckpointError(f"{path}: not a ca2st checkpoint directory (needs model.safetensors and config.json)")
    try:
        return json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}/config.json: not valid JSON ({err})") from err


def load_training_state(path: str | Path) -> dict:
    path = Path(path) / "state.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; this checkpoint cannot resume training")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint's weights into ``model``: every stored key must exist, and every trainable
    weight must be stored."""
    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    own = model.state_dict()
    unexpected = sorted(k for k in weights if k not in own)
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in weights)
    mismatched = sorted(f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in weights.items()
                        if k in own and v.shape != own[k].shape)
    if unexpected or missing or mismatched:
        raise CheckpointError(f"{path}: does not fit the model — missing {missing[:10]}, unexpected "
                              f"{unexpected[:10]}, shape mismatches {mismatched[:10]}")
    model.load_state_dict(weights, strict=False)


def load_model(path: str | Path, experts: dict[str, str] | None = None, **overrides) -> MultiExpertModel:
    """Rebuild a model for inference from our checkpoint plus the expert weights it names.

    Expert weight files come from ``experts`` (kind -> path), else from the checkpoint's config, else
    from CLIP_PATH / VMAE_PATH / AST_PATH; a checkpoint saved with its expert weights needs none.
    Returns the model in eval mode.
    """
    from ..checkpoints import load_expert_weights
    from .config import EXPERT_ENV

    config = read_checkpoint_config(path)
    model = MultiExpertModel(ModelConfig.from_dict(config["model"]).replace(**overrides)).eval()
    if not config.get("include_experts"):
        paths = {**config.get("experts", {}), **(experts or {})}
        for kind in model.experts:
            source = paths.get(kind) or os.environ.get(EXPERT_ENV.get(kind, ""))
            if not source:
                raise CheckpointError(f"{path}: holds only the trainable weights; the {kind} expert's weights are "
                                      f"needed too: pass experts={{'{kind}': file}} or set "
                                      f"{EXPERT_ENV.get(kind, 'the path')}")
            load_expert_weights(model, source, expert=kind)
    load_weights(model, path)
    return model
