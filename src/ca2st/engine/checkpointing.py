"""Training checkpoints: a model folder (:mod:`ca2st.checkpoints.ca2st`) plus ``state.pt``, the training state.

``output_dir/checkpoint-<step>/`` holds ``model.safetensors``, ``config.json`` (the model record, with the run
config) and ``state.pt`` (optimizer, scheduler, scaler, EMA, every rank's RNG, epoch and position in the epoch),
written atomically together. ``state.pt`` is read with ``weights_only=True``.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from ..checkpoints.ca2st import is_model_folder, write_model_folder
from ..errors import CheckpointError
from .distributed import DistInfo

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE = "state.pt"


def save_checkpoint(
    directory: str | Path, model: nn.Module, *, state: dict | None = None, include_experts: bool = False, **record
) -> Path:
    """Write a training checkpoint atomically (``record`` as for the model record: ``model_name``, ``experts``,
    ``run``, ``meta``); ``state`` goes to ``state.pt``. Returns its path."""
    extra = {STATE: lambda p: torch.save(state, p)} if state is not None else {}
    return write_model_folder(directory, model, extra_files=extra, include_experts=include_experts, **record)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The numbered checkpoint with the most optimizer steps that is complete (has state.pt), or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = []
    for child in output_dir.iterdir():
        m = CHECKPOINT_PATTERN.match(child.name)
        if m and child.is_dir() and is_model_folder(child) and (child / STATE).is_file():
            found.append((int(m.group(1)), child))
    return max(found)[1] if found else None


def prune_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent numbered checkpoints."""
    output_dir = Path(output_dir)
    found = sorted((int(m.group(1)), c) for c in output_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(c.name)))
    for _, path in found[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def load_training_state(path: str | Path) -> dict:
    path = Path(path) / STATE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; this checkpoint cannot resume training")
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(dist_info: DistInfo) -> dict:
    """The random state a resume restores: every rank's torch generator (each rank resumes its own drop-path
    randomness) and Python's generator, in forms ``torch.load(weights_only=True)`` reads."""
    state = torch.get_rng_state()
    states = [state]
    if dist_info.enabled:
        states = [torch.empty_like(state, device=dist_info.device) for _ in range(dist_info.world_size)]
        torch.distributed.all_gather(states, state.to(dist_info.device))
        states = [s.cpu() for s in states]
    version, internal, gauss = random.getstate()
    return {"torch": states, "python": [version, *internal, gauss if gauss is not None else -1.0]}


def restore_rng_state(state: dict, rank: int) -> None:
    """Restore what :func:`rng_state` saved, for ``rank``."""
    torch.set_rng_state(state["torch"][rank])
    flat = state["python"]
    gauss = flat[-1]
    random.setstate((flat[0], tuple(int(x) for x in flat[1:-1]), None if gauss == -1.0 else gauss))
