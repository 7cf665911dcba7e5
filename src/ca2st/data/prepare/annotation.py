"""The new annotation file: the clip that holds each cut segment, and every row rewritten to point at its output."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from ..datasets.common import Sample, parse_timestamp, read_rows, read_text
from ..sampling import frame_range
from .records import EPS, HEADER_FORMATS, KEPT_ROW_FORMATS, LIST_FORMATS, PrepareSettings


def format_timestamp(seconds: float) -> str:
    """``'HH:MM:SS.ff'`` with up to 6 fraction digits (at least 2), never above ``seconds`` (frame boundaries
    written this way parse back to the same frame)."""
    micro = int(math.floor(seconds * 1e6 + 1e-3))
    whole, frac = divmod(micro, 1_000_000)
    hours, rest = divmod(whole, 3600)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{digits}"


@dataclass(frozen=True)
class Cut:
    """A segment's clip in source frames (``clip_first``/``clip_stop``, margin included), the segment's own frames
    in it (``seg_first``/``seg_stop``, output frames) and the clip's output frame count and rate."""

    clip_first: int
    clip_stop: int
    seg_first: int
    seg_stop: int
    count: int
    fps: float


def plan_cut(sample: Sample, num_frames: int, src_fps: float, settings: PrepareSettings, path: str) -> Cut:
    """The clip that holds ``sample``'s segment (with ``settings.margin`` seconds each side) in a video of
    ``num_frames`` frames at ``src_fps``; a segment outside the video raises :class:`DataError`."""
    first, count = frame_range(num_frames, src_fps, sample.start, sample.end, unit=sample.unit, path=path)
    pad = math.ceil(settings.margin * src_fps - 1e-6)
    clip_first, clip_stop = max(0, first - pad), min(num_frames, first + count + pad)
    out_fps = float(settings.fps or src_fps)
    ratio = src_fps / out_fps  # source frames per output frame
    total = max(1, math.ceil((clip_stop - clip_first) / ratio - EPS))
    seg_first = min(total - 1, math.ceil((first - clip_first) / ratio - EPS))
    seg_stop = min(total, max(seg_first + 1, math.ceil((first + count - clip_first) / ratio - EPS)))
    return Cut(clip_first, clip_stop, seg_first, seg_stop, total, out_fps)


def line_of(sample: Sample) -> int:
    """The annotation line a parser read ``sample`` from (its ``source`` is ``'file:line'``)."""
    return int(sample.source.rsplit(":", 1)[1])


def rewrite_list_row(fields: list[str]) -> str:
    """A ``<path> [label ...]`` row pointing at the re-encoded ``.mp4``."""
    path = Path(fields[0])
    return " ".join([str(path.with_suffix(".mp4")) if path.suffix else f"{path}.mp4", *fields[1:]])


def rewrite_epic_row(row: dict[str, str], sample: Sample, cut: Cut | None, fps: float | None) -> dict[str, str]:
    """An EPIC-KITCHENS-100 row for a cut clip (``cut``) or an uncut video re-encoded at ``fps`` (None: kept)."""
    row = dict(row)
    if cut is not None:
        row["video_id"] = row["narration_id"]
        first, stop, rate = cut.seg_first, cut.seg_stop, cut.fps
        row["start_timestamp"], row["stop_timestamp"] = format_timestamp(first / rate), format_timestamp(stop / rate)
    elif fps is not None and "start_timestamp" in row:  # frame numbers at the new rate, from the timestamps
        times = (parse_timestamp(row[k], f"{sample.source}: {k}") for k in ("start_timestamp", "stop_timestamp"))
        first, stop = (math.ceil(t * fps - 1e-6) for t in times)
    else:
        return row
    if "start_frame" in row:
        row["start_frame"] = str(first + 1)  # 1-based, inclusive
    if "stop_frame" in row:
        row["stop_frame"] = str(max(stop, first + 1))
    return row


@dataclass
class AnnotationText:
    """An annotation file's header lines and, per line number, the rewritten row."""

    header: list[str]
    rows: dict[int, str]

    def text(self, lines: list[int]) -> str:
        return "".join(f"{ln}\n" for ln in self.header + [self.rows[n] for n in lines])


def csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


def rewrite_annotation(path: str, fmt: str, samples: list[Sample], cuts: dict[str, Cut], fps) -> AnnotationText:
    """The rows of ``samples`` rewritten to point at their outputs (``cuts``: per sample id, for cut segments)."""
    by_line = {line_of(s): s for s in samples}
    if fmt in LIST_FORMATS:
        return AnnotationText([], {n: rewrite_list_row(f) for n, f in read_rows(path, None) if n in by_line})
    if fmt in KEPT_ROW_FORMATS:
        lines = read_text(path).splitlines()
        header = lines[:1] if fmt in HEADER_FORMATS else []
        return AnnotationText(header, {n: lines[n - 1].strip() for n in by_line})
    rows = read_rows(path, ",")
    _, header = next(rows)
    header = [h.strip() for h in header]
    out = {}
    for n, values in rows:
        if n in by_line:
            s = by_line[n]
            row = rewrite_epic_row(dict(zip(header, (v.strip() for v in values))), s, cuts.get(s.id), fps)
            out[n] = csv_line([row[h] for h in header])
    return AnnotationText([csv_line(header)], out)
