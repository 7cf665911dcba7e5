"""``ca2st data check``: verify that every file an annotation list names is there and usable.

Each distinct video is probed once (with the frame count that decodes, see :func:`ca2st.data.decode.probe`)
and its first and last frames decoded (a truncated file fails there); the annotation's segments are checked
against the video's length. Reported problems, per file:

* ``missing`` — no such file; ``undecodable`` — the container or a frame cannot be decoded;
* ``no audio`` — no audio track (only with ``audio=True``; a separate audio file must exist and have one);
* ``silent audio`` — (with ``audio=True``) an audio track whose RMS level over its first ``audio_seconds`` is
  below ``silence_db`` dBFS (a full-scale sine is -3 dBFS): a muted or near-silent recording;
* ``fps`` — unknown frame rate, or one that differs from ``fps`` by more than ``fps_tolerance`` (relative);
* ``duration`` — shorter than ``min_duration`` seconds; ``segment`` — a segment outside the video, or ending
  more than ``segment_tolerance`` seconds past its end (wrong video or wrong time unit);
* ``short side`` — smaller than ``min_short_side`` pixels (frames would be upscaled for the 224 crops).

Notes (handled, not problems): ``frame count`` — the header declares another frame count than the one used
(an AVI header counting frames that never decode, an MP4 edit list hiding frames); ``rotation`` — a display
matrix turns the video (frames are decoded upright).

Wrong preprocessing (short side, fps, missing videos) is the usual reason a released checkpoint evaluates
lower than published; this report is meant to be run before any evaluation.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..text import plural
from .datasets import parse_annotations
from .sampling import frame_range

__all__ = ["check_dataset", "audio_level", "CheckReport", "FileProblem"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileProblem:
    """One problem of one file: ``kind`` (see the module docstring) and a readable ``message``."""

    path: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found; ``ok`` is True when there is no problem."""

    annotation: str
    format: str
    num_samples: int
    num_files: int
    problems: list[FileProblem] = field(default_factory=list)
    notes: list[FileProblem] = field(default_factory=list)
    audio_levels: list[float] = field(default_factory=list)
    fps: Counter = field(default_factory=Counter)
    short_sides: Counter = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    excluded_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    @property
    def bad_files(self) -> int:
        return len({p.path for p in self.problems})

    def summary(self) -> list[str]:
        """Human-readable summary lines."""
        files = plural(self.num_files, "file")
        lines = [f"{self.annotation} ({self.format}): {plural(self.num_samples, 'sample')} in {files}"]
        if self.excluded_rows:
            lines.append(f"  rows excluded by the parser: {self.excluded_rows}")
        if self.fps:
            lines.append("  fps: " + ", ".join(f"{f:g} ({plural(n, 'file')})" for f, n in self.fps.most_common(5)))
        if self.short_sides:
            sides = self.short_sides.most_common(5)
            lines.append("  short side: " + ", ".join(f"{s}px ({plural(n, 'file')})" for s, n in sides))
        if self.durations:
            d = self.durations
            lines.append(f"  duration: min {min(d):.2f} s, median {statistics.median(d):.2f} s, max {max(d):.2f} s")
        if self.audio_levels:
            levels = self.audio_levels
            lines.append(
                f"  audio level (RMS): min {min(levels):.1f} dBFS, median {statistics.median(levels):.1f} dBFS"
            )
        if self.notes:
            kinds = Counter(n.kind for n in self.notes)
            lines.append("  notes (handled): " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        if self.ok:
            lines.append("  no problems found")
        else:
            lines.append(
                f"  {plural(len(self.problems), 'problem')} in {self.bad_files} of {files}: "
                + ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items()))
            )
        return lines


def _resolve(path: str, root: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or root is None else root / p


def check_dataset(
    annotation: str | Path,
    root: str | Path | None = None,
    *,
    format: str | None = None,
    audio: bool = False,
    audio_root: str | Path | None = None,
    fps: float | None = None,
    fps_tolerance: float = 0.01,
    min_short_side: int | None = 224,
    min_duration: float | None = None,
    segment_tolerance: float = 0.5,
    silence_db: float = -60.0,
    audio_seconds: float = 30.0,
    decode: bool = True,
    limit: int | None = None,
    progress: bool = True,
    **options,
) -> CheckReport:
    """Scan every file of an annotation list; ``options`` go to the format's parser (``classes=``, ...).

    A malformed annotation file raises :class:`DataError` (file and line); problems of the media files are
    collected in the returned :class:`CheckReport`. ``limit`` checks only the first files (a quick look).
    ``decode=False`` only probes (no frame decoded, no rotation or audio level read).
    """
    from .decode import display_rotation, has_audio, probe, read_frames

    if not audio_seconds > 0:
        raise ConfigError(f"audio_seconds must be a positive number of seconds, got {audio_seconds!r}")
    if not segment_tolerance >= 0:
        raise ConfigError(f"segment_tolerance must be 0 or more seconds, got {segment_tolerance!r}")

    ann = parse_annotations(annotation, format, **options)
    implied_fps = _annotation_fps(annotation, ann, options)
    root = Path(root) if root is not None else None
    audio_root = Path(audio_root) if audio_root is not None else root
    by_file: dict[str, list] = defaultdict(list)
    for s in ann.samples:
        by_file[s.path].append(s)
    files = list(by_file)[:limit] if limit else list(by_file)
    report = CheckReport(str(annotation), ann.format, len(ann.samples), len(files), excluded_rows=len(ann.excluded))
    for rel in tqdm(files, desc="checking videos", unit="file", disable=not progress):
        path = _resolve(rel, root)
        where = str(path)

        def problem(kind: str, message: str, at: str = where):
            report.problems.append(FileProblem(at, kind, message))

        def note(kind: str, message: str, at: str = where):
            report.notes.append(FileProblem(at, kind, message))

        if not path.is_file():
            used = plural(len(by_file[rel]), "sample")
            problem("missing", f"file not found (used by {used}, e.g. {by_file[rel][0].source})")
            continue
        try:
            info = probe(path)
        except DataError as err:
            problem("undecodable", str(err))
            continue
        if decode:
            try:
                read_frames(path, sorted({0, info.num_frames - 1}))
                rotation = display_rotation(path)
            except DataError as err:
                problem("undecodable", str(err))
                continue
            if rotation:
                note("rotation", f"the display matrix turns the video {rotation} degrees: frames are decoded upright")
        if info.header_frames and info.header_frames != info.num_frames:
            note("frame count", _count_note(info))
        short = min(info.width, info.height)
        report.short_sides[short] += 1
        if not info.fps or info.fps <= 0:
            problem("fps", "the video has no usable frame rate")
        else:
            report.fps[round(info.fps, 3)] += 1
            if fps is not None and abs(info.fps - fps) > fps_tolerance * fps:
                problem("fps", f"{info.fps:g} fps, expected {fps:g}")
            stated = implied_fps.get(rel)
            if stated is not None and abs(info.fps - stated) > max(fps_tolerance, 0.02) * stated:
                problem(
                    "fps",
                    f"{info.fps:g} fps, but the annotation's frame numbers and timestamps imply {stated:.4g} fps: "
                    "the video was re-encoded at another rate, so frame-based segments would miss",
                )
        duration = info.num_frames / info.fps if info.fps else info.duration
        report.durations.append(duration)
        if min_duration is not None and duration < min_duration:
            problem("duration", f"{duration:.2f} s, shorter than {min_duration:g} s")
        if min_short_side is not None and short < min_short_side:
            problem("short side", f"{info.width}x{info.height}: short side {short}px < {min_short_side}px")
        if info.fps:
            for s in by_file[rel]:
                if s.start is None and s.end is None:
                    continue
                try:
                    frame_range(info.num_frames, info.fps, s.start, s.end, unit=s.unit)
                except DataError as err:
                    problem("segment", f"sample {s.id} ({s.source}): {err}")
                    continue
                past = _past_the_end(s, info.num_frames, info.fps)
                if past > segment_tolerance:
                    problem("segment", f"sample {s.id} ({s.source}): {_past_message(s, info, past)}")
        if audio:
            audio_files = {s.audio_path for s in by_file[rel]}
            for a in sorted(audio_files, key=str):
                if a is None:
                    if not info.has_audio:
                        problem("no audio", "the video has no audio track")
                        continue
                    apath = path
                else:
                    apath = _resolve(a, audio_root)
                    if not apath.is_file():
                        problem("no audio", "audio file not found", str(apath))
                        continue
                try:
                    if not has_audio(apath):
                        problem("no audio", "the file has no audio track", str(apath))
                        continue
                    if not decode:
                        continue
                    level = audio_level(apath, audio_seconds)
                except DataError as err:
                    problem("undecodable", str(err), str(apath))
                    continue
                report.audio_levels.append(level)
                if level < silence_db:
                    problem(
                        "silent audio",
                        f"RMS level {level:.1f} dBFS over the first {audio_seconds:g} s, below {silence_db:g} dBFS: "
                        "a silent or near-silent track",
                        str(apath),
                    )
    for p in report.problems + report.notes:
        log.info("%s", p)
    return report


def _annotation_fps(annotation, ann, options: dict) -> dict[str, float]:
    """Per video file, the frame rate an EPIC-style annotation implies: the median of ``start_frame (1-based) /
    start_timestamp`` over its segments starting after 1 s (empty for other formats)."""
    if ann.format != "epic100" or options.get("use_frames"):
        return {}
    try:
        frames = parse_annotations(annotation, ann.format, **{**options, "use_frames": True}).samples
    except DataError:  # no frame columns
        return {}
    ratios: dict[str, list[float]] = defaultdict(list)
    for by_time, by_frame in zip(ann.samples, frames):
        if by_time.id == by_frame.id and by_time.start and by_time.start > 1.0:
            ratios[by_time.path].append((by_frame.start + 1) / by_time.start)  # start_frame ≈ round(t · fps)
    return {path: statistics.median(r) for path, r in ratios.items()}


def audio_level(path, seconds: float = 30.0) -> float:
    """RMS level in dBFS of the first ``seconds`` of the file's first audio track, mixed to mono
    (``-inf`` for digital silence; a full-scale sine is -3 dBFS)."""
    from .decode import read_audio

    wave = read_audio(path, 0.0, seconds, sample_rate=16000).double()
    if wave.numel() == 0:
        raise DataError(f"{path}: the audio track has no samples in its first {seconds:g} s")
    rms = float(wave.square().mean().sqrt())
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _past_the_end(sample, num_frames: int, fps: float) -> float:
    """Seconds by which the sample's segment ends after the video's last frame (negative or 0 inside)."""
    if sample.end is None:
        return 0.0
    end = sample.end if sample.unit == "seconds" else sample.end / fps
    return end - num_frames / fps


def _past_message(sample, info, past: float) -> str:
    length = f"{info.num_frames / info.fps:.2f} s, {info.num_frames} frames"
    end = f"{sample.end:g} s" if sample.unit == "seconds" else f"frame {sample.end:g}"
    return f"ends at {end}, {past:.2f} s past the end of the video ({length}): wrong video or time unit?"


def _count_note(info) -> str:
    how = {
        "decoded": "decode: the video ends there",
        "packets": "are presented (an edit list hides the others; frame 0 is the first presented frame)",
    }.get(info.num_frames_source, f"by {info.num_frames_source}")
    return f"the header declares {info.header_frames} frames, {info.num_frames} {how}; {info.num_frames} are used"
