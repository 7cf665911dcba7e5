"""Training checkpoints: a model folder (:mod:`ca2st.checkpoints.ca2st`) plus ``state.pt``, the training state.

``output_dir/checkpoint-<step>/`` holds ``model.safetensors``, ``config.json`` (the model record, with the run
config) and ``state.pt`` (optimizer, scheduler, scaler, EMA, every rank's RNG, epoch and position in the epoch,
the best evaluation so far, whether an evaluation is due), written atomically together. ``state.pt`` is read
with ``weights_only=True``. When the evaluation due at an epoch's end is done, ``evaluation.json`` (its record and
the best after it) is added to that checkpoint atomically, so a resume knows whether to run it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints.ca2st import is_model_folder, read_record, read_weights, write_failure, write_model_folder
from ..errors import CheckpointError
from .distributed import DistInfo

log = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE = "state.pt"
EVALUATION = "evaluation.json"


def save_checkpoint(
    directory: str | Path, model: nn.Module, *, state: dict | None = None, include_experts: bool = False, **record
) -> Path:
    """Write a training checkpoint atomically (``record`` as for the model record: ``model_name``, ``experts``,
    ``run``, ``meta``); ``state`` goes to ``state.pt`` with its tensors on the CPU (so a plain ``torch.load`` reads a
    GPU run's state on any machine). Returns its path."""
    extra = {STATE: lambda p: torch.save(on_cpu(state), p)} if state is not None else {}
    return write_model_folder(directory, model, extra_files=extra, include_experts=include_experts, **record)


def on_cpu(obj):
    """``obj`` with every tensor in its dicts, lists and tuples moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def checkpoint_folders(output_dir: str | Path, newest_first: bool = True) -> list[Path]:
    """The numbered checkpoints that are complete (weights, record and state.pt present), by step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        m = CHECKPOINT_PATTERN.match(child.name)
        if m and child.is_dir() and is_model_folder(child) and (child / STATE).is_file():
            found.append((int(m.group(1)), child))
    return [path for _, path in sorted(found, reverse=newest_first)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The numbered checkpoint with the most optimizer steps that is complete (has state.pt), or None."""
    return next(iter(checkpoint_folders(output_dir)), None)


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent numbered checkpoints."""
    output_dir = Path(output_dir)
    found = sorted((int(m.group(1)), c) for c in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(c.name)))
    for _, path in found[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def load_training_state(path: str | Path) -> dict:
    """``state.pt`` of a checkpoint (a missing or damaged file raises :class:`CheckpointError` naming it)."""
    path = Path(path) / STATE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; this checkpoint cannot resume training")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, unpickling refused, ...
        raise CheckpointError(f"{path}: not a readable training state ({err})") from err


@dataclass
class TrainingCheckpoint:
    """A checkpoint read back whole: weights, model record, training state and, if done, the evaluation due
    at its epoch's end (``{"record": ..., "best": ...}``)."""

    path: Path
    weights: dict[str, torch.Tensor]
    record: dict[str, Any]
    state: dict[str, Any]
    evaluation: dict[str, Any] | None = None


def read_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """Read every file of a training checkpoint; anything unreadable raises :class:`CheckpointError` naming it."""
    path = Path(path)
    record, weights, state = read_record(path), read_weights(path), load_training_state(path)
    evaluation = None
    if (path / EVALUATION).is_file():
        try:
            evaluation = json.loads((path / EVALUATION).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path / EVALUATION}: not readable ({err})") from err
    return TrainingCheckpoint(path, weights, record, state, evaluation)


def mark_evaluated(path: str | Path, record: dict[str, Any], best: dict[str, Any] | None) -> None:
    """Record in checkpoint ``path`` that the evaluation due at its epoch's end is done (atomically)."""
    target = Path(path) / EVALUATION
    tmp = target.with_name(f".{EVALUATION}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump({"record": record, "best": best}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as err:
        raise CheckpointError(write_failure(target, err)) from err


def _gather(state: torch.Tensor, dist_info: DistInfo) -> list[torch.Tensor]:
    """Every rank's copy of ``state`` (a generator state), gathered through the process group's device."""
    if not dist_info.enabled:
        return [state]
    states = [torch.empty_like(state, device=dist_info.device) for _ in range(dist_info.world_size)]
    torch.distributed.all_gather(states, state.to(dist_info.device))
    return [s.cpu() for s in states]


def rng_state(dist_info: DistInfo) -> dict:
    """The random state a resume restores: every rank's torch CPU generator and, on a GPU, its CUDA generator
    (drop path and dropout draw from the generator of their device), and Python's generator, in forms
    ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    out = {
        "torch": _gather(torch.get_rng_state(), dist_info),
        "python": [version, *internal, gauss if gauss is not None else -1.0],
    }
    if dist_info.device.type == "cuda":
        out["cuda"] = _gather(torch.cuda.get_rng_state(dist_info.device), dist_info)
    return out


def restore_rng_state(state: dict, rank: int, device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` saved, for ``rank`` (and its CUDA ``device``). A rank the checkpoint has no
    state for (a resume with more processes) keeps its own fresh stream."""
    if rank >= len(state["torch"]):
        log.warning("the checkpoint holds no random state for rank %d (it was saved by fewer processes)", rank)
    else:
        torch.set_rng_state(state["torch"][rank])
        if device is not None and device.type == "cuda" and rank < len(state.get("cuda", [])):
            torch.cuda.set_rng_state(state["cuda"][rank], device)
    flat = state["python"]
    gauss = flat[-1]
    random.setstate((flat[0], tuple(int(x) for x in flat[1:-1]), None if gauss == -1.0 else gauss))
