"""Feature extraction for long videos: every expert's pooled feature and the head's fused input, per window.

Each video (or annotated segment) is cut into sliding windows (:func:`~ca2st.prediction.sliding_windows`; without
``window``, one window over the whole video or segment). The windows go through
:func:`~ca2st.engine.data.inference_dataset` under the model's input recipe (one view per window unless
``num_clips`` is given), are decoded by loader workers and batched through ``model.forward_features``; with
several views the features are averaged over them.

**On-disk layout** (``out_dir``)::

    out_dir/
      <key>.safetensors     one file per video (keys may hold subfolders: a folder's relative paths)
      index.jsonl           one JSON object per line: {"video", "key", "file", "windows", "status", "error"}

Every ``<key>.safetensors`` holds, for its ``W`` windows (in time order):

* ``<expert>`` ``(W, d_expert)`` float32: each expert's pooled feature after the exchanges (``spatial``,
  ``temporal``, ``audio``, ...), with ``--features pooled``;
* ``fused`` ``(W, d)`` float32: the classifier's input (the sum of the head's fused expert features, before
  dropout); for composition models one per task, ``fused.verb``, ``fused.noun``; with ``--features fused``;
* ``starts``, ``ends`` ``(W,)`` float64: each window's start and end in seconds of the video file;

and string metadata: ``video`` (the file), ``experts`` (comma-separated), ``window``, ``stride`` (empty without windows),
``views`` (per window) and ``recipe`` (the input recipe as JSON). ``safetensors.safe_open`` or
``safetensors.numpy.load_file`` read it without ca2st.

``index.jsonl`` is appended to (one line per video and run; under ``torchrun`` by every process): ``status`` is
``"ok"`` (the file is complete) or ``"failed"`` (``error`` says why; no file is written). Where a video has several
lines, the last one counts. Files are written under a temporary name and renamed, so a file that exists is
complete: a rerun skips it (resume after a crash or a kill). Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the
environment) process ``r`` of ``N`` takes the videos ``i`` with ``i % N == r``; no process group is needed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .errors import Ca2stError, ConfigError, DataError
from .tasks import SINGLE, as_task_dict
from .text import plural

__all__ = ["extract_features", "ExtractionReport", "VideoItem", "find_videos", "FEATURES", "INDEX_NAME"]

log = logging.getLogger(__name__)

FEATURES = ("pooled", "fused")
INDEX_NAME = "index.jsonl"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class VideoItem:
    """One video to extract: its file, the output ``key`` (file name without suffix) and an optional segment
    (``start``/``end`` in seconds, ``None``: the whole file)."""

    path: str
    key: str
    start: float | None = None
    end: float | None = None


@dataclass
class ExtractionReport:
    """What one process did: ``written``/``skipped`` keys, ``failures`` ``[(video, reason)]``."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> list[str]:
        shard = f" (process {self.rank} of {self.world_size})" if self.world_size > 1 else ""
        return [
            f"{self.out_dir}{shard}: {plural(len(self.written), 'video')} written, {len(self.skipped)} already "
            f"done, {len(self.failures)} failed"
        ]


# --------------------------------------------------------------------------------------------- inputs


def find_videos(folder) -> list[Path]:
    """The video files under ``folder`` (recursively, by suffix), sorted."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def video_items(source, root=None, format: str | None = None, **options) -> list[VideoItem]:
    """:class:`VideoItem` s of a folder of videos (keys: relative paths without suffix), a single video (key: its
    stem) or an annotation file parsed by :func:`~ca2st.data.datasets.parse_annotations` with ``format`` and the
    parser's ``options`` (keys: sample ids; paths relative to ``root``, default the annotation's folder)."""
    from .data.datasets import parse_annotations

    source = Path(source)
    if source.is_dir():
        videos = find_videos(source)
        if not videos:
            raise DataError(f"{source}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder")
        return [VideoItem(str(p), p.relative_to(source).with_suffix("").as_posix()) for p in videos]
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.suffix.lower() in VIDEO_SUFFIXES:
        return [VideoItem(str(source), source.stem)]
    base = Path(root) if root is not None else source.parent
    items = []
    for s in parse_annotations(source, format, **options).samples:
        if s.unit != "seconds" and s.start is not None:
            raise ConfigError(f"{s.source or source}: segments in {s.unit} are not supported; give seconds")
        path = Path(s.path) if Path(s.path).is_absolute() else base / s.path
        items.append(VideoItem(str(path), s.id, s.start, s.end))
    return items


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The items ``i`` with ``i % world_size == rank``."""
    if not (world_size >= 1 and 0 <= rank < world_size):
        raise ConfigError(f"RANK must be in [0, WORLD_SIZE), got RANK={rank}, WORLD_SIZE={world_size}")
    return [x for i, x in enumerate(items) if i % world_size == rank]


def env_rank() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment (torchrun), ``(0, 1)`` without."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as err:
        raise ConfigError(f"RANK and WORLD_SIZE must be integers: {err}") from None


# --------------------------------------------------------------------------------------------- one video


def window_spans(item: VideoItem, window: float | None, stride: float | None) -> list[tuple[float, float]]:
    """The ``(start, end)`` seconds of an item's windows, in the file's time."""
    from .data.decode import probe
    from .prediction import sliding_windows

    info = probe(item.path)
    duration = info.num_frames / info.fps if info.fps else info.duration
    start = 0.0 if item.start is None else float(item.start)
    end = duration if item.end is None else min(float(item.end), duration)
    if end <= start:
        raise DataError(f"{item.path}: the segment {start:g}-{end:g} s is empty (the video lasts {duration:g} s)")
    if window is None:
        return [(start, end)]
    return [(round(start + s, 6), round(start + e, 6)) for s, e in sliding_windows(end - start, window, stride)]


@torch.inference_mode()
def window_features(
    model, item: VideoItem, spans, recipe, features, *, device, precision, batch_size, num_workers
) -> dict[str, torch.Tensor]:
    """``{name: (W, d)}`` features of ``spans`` of one video (see the module docstring for the names)."""
    from .data.datasets import Sample
    from .engine.data import build_loader, inference_dataset
    from .precision import autocast

    tasks = list(model.tasks)
    samples = [Sample(id=str(k), path=item.path, label=None, start=s, end=e) for k, (s, e) in enumerate(spans)]
    dataset = inference_dataset(samples, recipe, tasks=tasks if tasks != [SINGLE] else None, on_error="exclude")
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1, len(spans)) if len(spans) > 1 else 0
    loader = build_loader(dataset, max(1, int(batch_size)), num_workers, device=device)
    dev = torch.device(device)
    use_times = getattr(model, "time_codes", None) is not None
    parts: dict[str, list[torch.Tensor]] = {}
    order = []
    for video, audio, _, meta in loader:
        bad = torch.as_tensor(meta.get("excluded", torch.zeros(video.shape[0]))).reshape(-1).bool()
        if bad.any():
            i = int(torch.nonzero(bad)[0])
            s, e = spans[int(torch.as_tensor(meta.get("requested", meta["index"])).reshape(-1)[i])]
            raise DataError(f"{item.path}: window {s:g}-{e:g} s could not be read: {meta['error'][i]}")
        b, views = video.shape[:2]
        kwargs = {}
        if use_times and "intervals" in meta:
            kwargs["times"] = torch.as_tensor(meta["intervals"]).flatten(0, 1).to(dev)
        v = video.flatten(0, 1).to(dev, non_blocking=True)
        a = None if audio is None else audio.flatten(0, 1).to(dev, non_blocking=True)
        with autocast(precision, dev):
            pooled = model.forward_features(v, a, **kwargs)
            out = dict(pooled) if "pooled" in features else {}
            if "fused" in features:
                for task, x in as_task_dict(model.head.fuse_features(pooled)).items():
                    out["fused" if task == SINGLE else f"fused.{task}"] = x
        for name, x in out.items():
            parts.setdefault(name, []).append(x.float().reshape(b, views, -1).mean(1).cpu())
        order.append(torch.as_tensor(meta.get("requested", meta["index"])).reshape(-1))
    if sum(len(o) for o in order) != len(spans):
        raise DataError(f"{item.path}: {len(spans)} windows asked, {sum(len(o) for o in order)} came back")
    perm = torch.argsort(torch.cat(order))
    return {name: torch.cat(xs)[perm].contiguous() for name, xs in parts.items()}


def save_features(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically: a temporary name in the same folder, then a rename."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_index(index: Path, row: dict) -> None:
    """One JSON line, written by a single append (lines of concurrent processes do not interleave)."""
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(index, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def indexed_ok(index: Path) -> set[str]:
    """Keys whose last index line says ``ok``."""
    status: dict[str, str] = {}
    if index.exists():
        for line in index.read_text().splitlines():
            try:
                row = json.loads(line)
                status[row["key"]] = row["status"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill
    return {k for k, s in status.items() if s == "ok"}


# --------------------------------------------------------------------------------------------- extract


def extract_features(
    model: torch.nn.Module,
    videos: str | os.PathLike | Iterable[VideoItem],
    out_dir,
    *,
    window: float | None = None,
    stride: float | None = None,
    num_clips: int | None = None,
    features: Sequence[str] = FEATURES,
    root=None,
    format: str | None = None,
    annotation_options: dict | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    batch_size: int = 8,
    num_workers: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> ExtractionReport:
    """Extract features of ``videos`` into ``out_dir`` (layout: the module docstring).

    ``videos``: a folder of videos, a video file, an annotation file (``format``, paths relative to ``root``), or
    :class:`VideoItem` s; ``annotation_options`` go to the format's parser (``num_classes``, ``classes``, ...).
    ``window``/``stride`` (seconds) cut each video into sliding windows (default: one window
    per video or segment). ``num_clips``: temporal views per window, features averaged (default 1, one crop).
    ``features``: any of ``'pooled'`` and ``'fused'``. ``rank``/``world_size``: this process's share (default:
    ``RANK``/``WORLD_SIZE`` from the environment). Videos whose file exists are skipped; a broken video is logged,
    indexed as failed and listed in the report's ``failures``. ``model`` must already be on ``device``.
    """
    from .precision import check_precision

    if getattr(model, "input_recipe", None) is None:
        raise ConfigError("extract_features needs a ca2st model (with an input recipe)")
    features = tuple(features)
    unknown = sorted(set(features) - set(FEATURES))
    if unknown or not features:
        raise ConfigError(f"unknown features {unknown or features}: choose from {', '.join(FEATURES)}")
    if window is None and stride is not None:
        raise ConfigError("stride needs window (both in seconds)")
    if num_clips is not None and num_clips < 1:
        raise ConfigError(f"num_clips must be >= 1, got {num_clips}")
    check_precision(precision)
    env = env_rank()
    rank, world_size = env[0] if rank is None else rank, env[1] if world_size is None else world_size
    if isinstance(videos, (str, os.PathLike)):
        items = video_items(videos, root=root, format=format, **(annotation_options or {}))
    else:
        items = list(videos)
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(f"several videos would be written to the same file: {twice[:5]}")
    recipe = model.input_recipe.replace(test_clips=num_clips or 1, test_crops=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / INDEX_NAME
    done = indexed_ok(index)
    report = ExtractionReport(out, rank=rank, world_size=world_size)
    metadata = {
        "experts": ",".join(getattr(model, "experts", {})),
        "window": "" if window is None else f"{window:g}",
        "stride": "" if window is None else f"{stride if stride is not None else window:g}",
        "views": str(num_clips or 1),
        "recipe": json.dumps(recipe.to_dict()),
    }
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(shard(items, rank, world_size), desc="extract", unit="video", disable=not progress)
        for item in bar:
            path = out / f"{item.key}.safetensors"
            rel = path.relative_to(out).as_posix()
            if path.exists():
                report.skipped.append(item.key)
                if item.key not in done:
                    windows = len(safetensors_starts(path))
                    append_index(index, row(item, rel, windows, "ok"))
                continue
            try:
                spans = window_spans(item, window, stride)
                tensors = window_features(
                    model,
                    item,
                    spans,
                    recipe,
                    features,
                    device=device,
                    precision=precision,
                    batch_size=batch_size,
                    num_workers=num_workers,
                )
            except (Ca2stError, OSError) as err:  # unreadable files; anything else is a bug and stops the run
                reason = str(err) or type(err).__name__
                log.warning("extract: %s failed: %s", item.path, reason)
                report.failures.append((item.path, reason))
                append_index(index, row(item, rel, 0, "failed", reason))
                continue
            tensors["starts"] = torch.tensor([s for s, _ in spans], dtype=torch.float64)
            tensors["ends"] = torch.tensor([e for _, e in spans], dtype=torch.float64)
            save_features(path, tensors, {**metadata, "video": item.path})
            append_index(index, row(item, rel, len(spans), "ok"))
            report.written.append(item.key)
    finally:
        model.train(was_training)
    return report


def row(item: VideoItem, file: str, windows: int, status: str, error: str = "") -> dict:
    """An index line."""
    return {"video": item.path, "key": item.key, "file": file, "windows": windows, "status": status, "error": error}


def safetensors_starts(path: Path) -> torch.Tensor:
    """The ``starts`` tensor of a features file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.get_tensor("starts")
