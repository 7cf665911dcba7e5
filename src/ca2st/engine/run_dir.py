"""The output folder of a training run: one run at a time, leftovers removed, the resume point, and its logs.

* :class:`RunLock`: an exclusive ``flock`` on ``output_dir/.lock`` held for the whole run (rank 0). A second run
  on the folder refuses at once, naming the holder; the lock of a process that died is released by the kernel,
  so a new run takes it over.
* :func:`remove_leftovers`: hidden temporary folders of checkpoint writes that a kill interrupted.
* :func:`find_resume_point`: the newest complete checkpoint that reads back intact; damaged newer ones are
  skipped with a warning naming them.
* :func:`check_same_run`: a resumed run must be the same run (model, training data, batch, seed, ...).
* :class:`RunLog`: ``metrics.jsonl`` and TensorBoard; on resume, records past the resume point are dropped so
  nothing appears twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from .checkpointing import TrainingCheckpoint, checkpoint_folders, read_training_checkpoint
from .distributed import DistInfo

__all__ = [
    "RunLock",
    "lock_output_dir",
    "resume_point",
    "remove_leftovers",
    "find_resume_point",
    "check_same_run",
    "RunLog",
]

log = logging.getLogger(__name__)

LOCK = ".lock"
# run-config keys that make a run what it is: a resume with other values would continue another run
IDENTITY_KEYS = (
    "model",
    "data.format",
    "data.train",
    "data.options",
    "data.train_options",
    "data.batch_size",
    "data.sampler",
    "data.input_mode",
    "data.sampling_rate",
    "optim.update_freq",
    "seed",
    "freeze_experts",
    "random_experts",
)


class RunLock:
    """Exclusive lock on a run's ``output_dir`` (a context manager)."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent}: another ca2st run is using this output_dir ({holder}); wait for it to end, "
                "stop it, or give this run another output_dir"
            ) from None
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_output_dir(output_dir: str | Path, dist_info: DistInfo) -> RunLock | None:
    """Rank 0 takes the output folder's lock (returned, to release at the end); every rank learns whether it
    could, and raises :class:`ConfigError` if not."""
    lock, refusal = None, None
    if dist_info.is_main:
        try:
            lock = RunLock(output_dir).acquire()
        except ConfigError as err:
            refusal = str(err)
    if dist_info.enabled:
        shared = [refusal]
        torch.distributed.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal is not None:
        raise ConfigError(refusal)
    return lock


def remove_leftovers(output_dir: str | Path) -> list[Path]:
    """Remove the hidden temporary folders that interrupted checkpoint writes left (``.checkpoint-*``); call it
    only while holding the run's lock. Returns what was removed."""
    removed = []
    for child in Path(output_dir).glob(".checkpoint-*"):
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    if removed:
        log.info("removed %d leftover temporary folder(s) of interrupted checkpoint writes", len(removed))
    return removed


def find_resume_point(output_dir: str | Path) -> TrainingCheckpoint | None:
    """The newest numbered checkpoint that reads back intact (weights, record, training state), or ``None``;
    damaged newer ones are skipped with a warning naming them and the reason."""
    for path in checkpoint_folders(output_dir, newest_first=True):
        try:
            return read_training_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping damaged checkpoint %s: %s", path, err)
    return None


def resume_point(resume: str | None, output_dir: str | Path, dist_info: DistInfo) -> TrainingCheckpoint | None:
    """The checkpoint a run resumes from (``resume``: ``auto``, a path, or None): rank 0 chooses (``auto``: the
    newest intact one) and every rank reads the one it chose, so ranks with their own view of the folder cannot
    start at different steps."""
    if resume in (None, "auto"):
        chosen = None
        if resume == "auto" and dist_info.is_main:
            point = find_resume_point(output_dir)
            chosen = None if point is None else str(point.path)
        if dist_info.enabled:
            shared = [chosen]
            torch.distributed.broadcast_object_list(shared, src=0)
            chosen = shared[0]
        if chosen is None:
            return None
        if dist_info.is_main:
            return point
        return read_training_checkpoint(chosen)
    return read_training_checkpoint(resume)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name != "model" and not name.endswith("options"):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: str | Path) -> None:
    """Refuse to resume a run whose identity (:data:`IDENTITY_KEYS`) differs from the saved one, saying what
    differs and what to do."""
    old, new = _flatten(saved), _flatten(json.loads(json.dumps(current, default=str)))
    diffs = []
    for key in IDENTITY_KEYS:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [
                f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
            ]
        elif a != b and key in old:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    if diffs:
        raise ConfigError(
            f"{where}: resuming a different run ({'; '.join(diffs)}). Resume with the settings it was started "
            "with, or train into another output_dir (or with resume=null to start afresh in this one)"
        )


class RunLog:
    """Where a run's records go: ``metrics.jsonl`` (one JSON record per line, ``kind`` train, epoch or eval),
    TensorBoard scalars (``tensorboard/``, optional) and the log. On resume, :meth:`rewind` first drops the records
    past the resume point, so each appears once."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tensorboard = tensorboard
        self._writer = None

    def write(self, record: dict) -> None:
        if self._writer is None and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=record["step"])
        if self._writer is not None:
            for k, v in record.items():
                if isinstance(v, float):
                    self._writer.add_scalar(f"{record['kind']}/{k}", v, record["step"])
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("%s", record)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line a kill cut short
                continue
        return out

    def rewind(self, step: int, epochs_done: int, evaluated: int) -> None:
        """Keep what happened up to a resume point: train records up to ``step``, epoch records of the first
        ``epochs_done`` epochs, evaluations up to epoch ``evaluated``; each once."""
        kept, seen = [], set()
        for r in self.records():
            kind = r.get("kind")
            keep = (
                (kind == "train" and r.get("step", 0) <= step)
                or (kind == "epoch" and r.get("epoch", 0) < epochs_done)
                or (kind == "eval" and r.get("epoch", 0) <= evaluated)
            )
            key = (kind, r.get("step"), r.get("epoch"))
            if keep and key not in seen:
                seen.add(key)
                kept.append(r)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
