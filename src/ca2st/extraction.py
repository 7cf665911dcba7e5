"""Feature extraction for long videos: every expert's pooled feature, the head's fused input and, on request, every
expert's final tokens, per window.

Each video (or annotated segment) is cut into sliding windows (:func:`~ca2st.prediction.sliding_windows`; without
``window``, one window over the whole video or segment), sampled under the model's input recipe (one view per
window unless ``num_clips`` is given). Loader workers split the videos; each reads its videos from start to end,
``batch_size`` windows at a time, every batch's frames decoded in one pass over the file (frames that overlapping
windows share are decoded once) and its audio in one read. The batches go through ``model.forward_streams``
(``tokens``), ``model.pool`` (``pooled``) and the head's ``fuse_features`` (``fused``); with several views the
pooled and fused features are averaged over them.

**On-disk layout** (``out_dir``)::

    out_dir/
      <key>.safetensors     one file per video (keys may hold subfolders: a folder's relative paths)
      index.jsonl           one JSON object per line: {"video", "key", "file", "windows", "status", "error"}

Every ``<key>.safetensors`` holds, for its ``W`` windows (in time order):

* ``<expert>`` ``(W, d_expert)`` float32: each expert's pooled feature after the exchanges (``spatial``,
  ``temporal``, ``audio``, ...), with ``--features pooled``;
* ``fused`` ``(W, d)`` float32: the classifier's input (the sum of the head's fused expert features, before
  dropout); for composition models one per task, ``fused.verb``, ``fused.noun``; with ``--features fused``;
* ``tokens.<expert>`` ``(W, T, L, D)`` float16 (or float32): each expert's final token stream after the last
  exchange, before pooling (``model.experts[name].pool`` of it gives ``<expert>``): T time slots of L tokens, the
  expert's special tokens first (class token; ``special_tokens`` in the metadata), then its patch grid in raster
  order; with ``--features tokens`` (one view per window). Large: a CLIP-B/16 spatial expert gives 8 × 197 × 768
  values per window (2.4 MB in float16);
* ``starts``, ``ends`` ``(W,)`` float64: each window's start and end in seconds of the video file;

and string metadata: ``video`` (the file), ``experts`` (comma-separated), ``special_tokens`` (JSON: expert ->
count), ``window``, ``stride`` (empty without windows), ``views`` (per window) and ``recipe`` (the input recipe as
JSON). ``safetensors.safe_open`` or ``safetensors.numpy.load_file`` read it without ca2st (float16 tokens too).

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
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from .errors import Ca2stError, ConfigError, DataError
from .tasks import SINGLE, as_task_dict
from .text import plural

__all__ = ["extract_features", "ExtractionReport", "VideoItem", "find_videos", "FEATURES", "INDEX_NAME"]

log = logging.getLogger(__name__)

FEATURES = ("pooled", "fused", "tokens")
TOKEN_DTYPES = {"float16": torch.float16, "float32": torch.float32}
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


CHUNK_BYTES = 512 * 2**20  # decoded frames one worker holds at a time


@dataclass
class Chunk:
    """Consecutive windows of one video, decoded in one pass: item ``video`` (its position in the list), its windows
    ``first, first + 1, ...`` of ``total`` (their ``spans`` in seconds) and their loaded batch; or ``error``."""

    video: int
    first: int = 0
    total: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)
    batch: tuple | None = None
    error: str = ""

    @property
    def last(self) -> bool:
        return not self.error and self.first + len(self.spans) == self.total

    def pin_memory(self) -> "Chunk":
        """The chunk with its clips in pinned memory (the loader calls this for a GPU)."""
        if self.batch is None:
            return self
        video, audio, target, meta = self.batch
        pinned = (video.pin_memory(), None if audio is None else audio.pin_memory(), target, meta)
        return replace(self, batch=pinned)


class WindowChunks(IterableDataset):
    """The windows of ``items`` in :class:`Chunk` s of up to ``batch_size`` windows, each chunk's frames decoded in
    one pass over the file (:meth:`~ca2st.data.datasets.VideoDataset.load_group`) and its audio in one read.
    Loader workers split the videos (worker ``w`` of ``n`` takes the videos ``i % n == w``), so each video is read
    by one process, from start to end; chunks hold at most :data:`CHUNK_BYTES` of decoded frames."""

    def __init__(self, items: Sequence[VideoItem], spans_of, recipe, tasks, batch_size: int):
        self.items, self.spans_of, self.recipe, self.tasks = list(items), spans_of, recipe, tasks
        self.batch_size = max(1, int(batch_size))

    def __iter__(self):
        worker = get_worker_info()
        wid, n = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for k in range(wid, len(self.items), n):
            yield from self.chunks(k)

    def chunks(self, k: int):
        from .data.datasets import Sample, collate
        from .data.decode import probe
        from .engine.data import inference_dataset

        item = self.items[k]
        try:
            spans = self.spans_of(item)
            samples = [Sample(id=str(w), path=item.path, label=None, start=s, end=e) for w, (s, e) in enumerate(spans)]
            dataset = inference_dataset(samples, self.recipe, tasks=self.tasks, on_error="error")
            info = probe(item.path)
            frame_bytes = max(1, info.width * info.height * 3) * dataset.num_frames * dataset.num_clips
            size = min(self.batch_size, max(1, CHUNK_BYTES // frame_bytes))
            for first in range(0, len(spans), size):
                last = min(first + size, len(spans))
                yield Chunk(k, first, len(spans), spans[first:last], collate(dataset.load_group(range(first, last))))
        except (Ca2stError, OSError) as err:  # unreadable files; anything else is a bug and stops the run
            yield Chunk(k, error=str(err) or type(err).__name__)


@torch.inference_mode()
def chunk_features(model, chunk: Chunk, features, *, device, precision, tokens_dtype) -> dict[str, torch.Tensor]:
    """``{name: (count, ...)}`` features of a chunk's windows (names: the module docstring), on the CPU."""
    from .precision import autocast

    video, audio, _, meta = chunk.batch
    dev = torch.device(device)
    b, views = video.shape[:2]
    kwargs = {}
    if getattr(model, "time_codes", None) is not None and "intervals" in meta:
        kwargs["times"] = torch.as_tensor(meta["intervals"]).flatten(0, 1).to(dev)
    v = video.flatten(0, 1).to(dev, non_blocking=True)
    a = None if audio is None else audio.flatten(0, 1).to(dev, non_blocking=True)
    out = {}
    with autocast(precision, dev):
        streams = model.forward_streams(v, a, **kwargs)
        pooled = model.pool(streams)
        if "pooled" in features:
            out.update({kind: x.float() for kind, x in pooled.items()})
        if "fused" in features:
            for task, x in as_task_dict(model.head.fuse_features(pooled)).items():
                out["fused" if task == SINGLE else f"fused.{task}"] = x.float()
    result = {name: x.reshape(b, views, -1).mean(1).cpu() for name, x in out.items()}
    if "tokens" in features:  # one view per window (checked): no average
        result.update({f"tokens.{kind}": x.to(tokens_dtype).cpu() for kind, x in streams.items()})
    return result


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
    features: Sequence[str] = ("pooled", "fused"),
    tokens_dtype: str = "float16",
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
    ``features``: any of ``'pooled'``, ``'fused'`` and ``'tokens'`` (one view per window; stored as
    ``tokens_dtype``, ``'float16'`` or ``'float32'``). ``batch_size``: windows per forward pass (and per decoding
    pass). ``num_workers``: loader processes, each reading whole videos (default: up to 4, no more than videos).
    ``rank``/``world_size``: this process's share (default: ``RANK``/``WORLD_SIZE`` from the environment).
    Videos whose file exists are skipped; a broken video is logged, indexed as failed and listed in the report's
    ``failures``. ``model`` must already be on ``device``.
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
    if "tokens" in features and (num_clips or 1) > 1:
        raise ConfigError("tokens are stored per window from one view: leave num_clips at 1 to extract tokens")
    if tokens_dtype not in TOKEN_DTYPES:
        raise ConfigError(f"tokens_dtype must be one of {', '.join(TOKEN_DTYPES)}, got {tokens_dtype!r}")
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
    todo = []
    for item in shard(items, rank, world_size):
        path = out / f"{item.key}.safetensors"
        if not path.exists():
            todo.append(item)
            continue
        report.skipped.append(item.key)
        if item.key not in done:  # killed between the rename and the index line
            append_index(index, row(item, path.relative_to(out).as_posix(), len(safetensors_starts(path)), "ok"))
    if not todo:
        return report
    metadata = {
        "experts": ",".join(getattr(model, "experts", {})),
        "special_tokens": json.dumps({k: e.num_special for k, e in getattr(model, "experts", {}).items()}),
        "window": "" if window is None else f"{window:g}",
        "stride": "" if window is None else f"{stride if stride is not None else window:g}",
        "views": str(num_clips or 1),
        "recipe": json.dumps(recipe.to_dict()),
    }
    tasks = list(model.tasks)
    chunks = WindowChunks(
        todo,
        partial(window_spans, window=window, stride=stride),
        recipe,
        tasks if tasks != [SINGLE] else None,
        batch_size,
    )
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1, len(todo))
    loader = DataLoader(
        chunks, batch_size=None, num_workers=num_workers, pin_memory=torch.device(device).type == "cuda"
    )
    pending: dict[int, dict[str, list[torch.Tensor]]] = {}
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(todo), desc="extract", unit="video", disable=not progress)
    try:
        for chunk in loader:
            item = todo[chunk.video]
            rel = f"{item.key}.safetensors"
            if chunk.error:
                pending.pop(chunk.video, None)
                log.warning("extract: %s failed: %s", item.path, chunk.error)
                report.failures.append((item.path, chunk.error))
                append_index(index, row(item, rel, 0, "failed", chunk.error))
                bar.update()
                continue
            found = chunk_features(
                model, chunk, features, device=device, precision=precision, tokens_dtype=TOKEN_DTYPES[tokens_dtype]
            )
            parts = pending.setdefault(chunk.video, {})
            for name, x in found.items():
                parts.setdefault(name, []).append(x)
            parts.setdefault("spans", []).append(torch.tensor(chunk.spans, dtype=torch.float64).reshape(-1, 2))
            if not chunk.last:
                continue
            tensors = {name: torch.cat(xs).contiguous() for name, xs in pending.pop(chunk.video).items()}
            spans = tensors.pop("spans")
            tensors["starts"], tensors["ends"] = spans[:, 0].contiguous(), spans[:, 1].contiguous()
            save_features(out / rel, tensors, {**metadata, "video": item.path})
            append_index(index, row(item, rel, spans.shape[0], "ok"))
            report.written.append(item.key)
            bar.update()
    finally:
        bar.close()
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
