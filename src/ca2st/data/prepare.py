"""``ca2st data prepare``: re-encode a dataset into the form the papers trained on, with a new annotation file.

Every video an annotation file names is re-encoded to H.264 (``libx264``, ``yuv420p``) in an MP4 container, with
its short side scaled down to ``short_side`` (never up; both sides even), at ``fps`` (default: the source's),
upright (a phone video's display matrix is applied), with its audio track (AAC: copied when the source's track is
AAC and the whole file is kept, re-encoded otherwise; dropped with ``audio=False``). With ``cut_segments=True``
each annotated segment of an untrimmed video (EPIC-KITCHENS-100 rows) becomes its own clip, ``margin`` seconds of
context on each side included.

Frame ``i`` of an output at ``fps`` shows the source frame on screen at ``i / fps`` (frame indices and times as
:func:`ca2st.read_frames` counts them); audio sample 0 of an output plays with its frame 0, as in the source.

The new annotation file has the input's format and lists only the samples that were prepared; parsed with the
same options (``video_template=`` ...) it points at the outputs under ``out``:

* ``path``-first lists (``path_label``, ``cast_ssv2``, ``cast_k400``, ``ucf101``): the path gets the suffix ``.mp4``;
* ``cast_ek100``, ``kinetics``, ``kinetics_sound``, ``vggsound`` (trimmed clips named by the row's fields through
  ``video_template``): rows unchanged, files at the same relative paths (MP4 inside, whatever the suffix);
* ``epic100``: every column kept; cut segments get ``video_id`` = ``narration_id`` and timestamps and frame numbers
  relative to the clip (the annotated segment inside it: the whole clip without a margin); uncut videos keep their
  timestamps, and their frame numbers are recomputed when the frame rate changes.

Resumable: an output is written under a temporary name (``NAME.part``) and renamed when complete, so an existing
output is finished and skipped, and a ``.part`` file a killed run left is redone. The settings are recorded in
``out/prepare.json``; another run into the same folder with other settings is refused. Failures (a missing,
broken or truncated source, a segment outside its video) are named per file with the reason and counted; they do
not stop the other files.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..text import plural
from .datasets import guess_format, parse_annotations
from .datasets.common import Sample, parse_timestamp, read_rows, read_text
from .sampling import frame_range

__all__ = [
    "prepare_dataset",
    "PrepareSettings",
    "PrepareReport",
    "PrepareFailure",
    "SUPPORTED_FORMATS",
    "output_size",
    "format_timestamp",
]

log = logging.getLogger(__name__)

LIST_FORMATS = ("path_label", "cast_ssv2", "cast_k400", "ucf101")  # '<path> [label]' lines: the path is rewritten
KEPT_ROW_FORMATS = ("cast_ek100", "kinetics", "kinetics_sound", "vggsound")  # trimmed clips named by fields: kept
HEADER_FORMATS = ("kinetics", "kinetics_sound", "epic100")  # CSVs whose first line is a header the parser needs
SEGMENT_FORMATS = ("epic100",)  # segments of untrimmed videos: can be cut
SUPPORTED_FORMATS = LIST_FORMATS + KEPT_ROW_FORMATS + SEGMENT_FORMATS
SETTINGS_FILE = "prepare.json"
PART_SUFFIX = ".part"
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
EPS = 1e-9
AUDIO_LAG = 10.0  # seconds: a muxer interleaves audio and video far closer than this


@dataclass(frozen=True)
class PrepareSettings:
    """How outputs are encoded. ``fps=None`` keeps each source's rate; ``crf`` and ``preset`` are libx264's (the
    defaults are FFmpeg's, i.e. what ``ffmpeg -vf scale=-2:256`` gives); ``margin`` is in seconds."""

    short_side: int = 256
    fps: float | None = None
    crf: int = 23
    preset: str = "medium"
    audio: bool = True
    cut_segments: bool = False
    margin: float = 0.0

    def check(self) -> None:
        if not isinstance(self.short_side, int) or self.short_side < 2:
            raise ConfigError(f"short_side must be an integer of at least 2 pixels, got {self.short_side!r}")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and 0 < self.fps <= 1000):
            raise ConfigError(f"fps must be a frame rate in (0, 1000], or None to keep the source's; got {self.fps!r}")
        if not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be an integer in 0..51 (libx264; lower is better quality), got {self.crf!r}")
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
        if self.preset not in presets:
            raise ConfigError(f"preset must be one of {', '.join(presets)}, got {self.preset!r}")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin <= 3600):
            raise ConfigError(f"margin must be 0 or more seconds, got {self.margin!r}")


@dataclass(frozen=True)
class PrepareFailure:
    """A source file (or one of its segments) that could not be prepared: its ``path``, the ``reason`` and the
    samples left out of the new annotation because of it."""

    path: str
    reason: str
    samples: tuple[str, ...] = ()

    def __str__(self) -> str:
        left = f" ({plural(len(self.samples), 'sample')} left out, e.g. {self.samples[0]})" if self.samples else ""
        return f"{self.path}: {self.reason}{left}"


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did. ``ok`` is True when every sample was prepared."""

    annotation: str
    format: str
    out: str
    output_annotation: str | None
    num_samples: int
    prepared: int = 0
    encoded: int = 0
    skipped: int = 0
    failures: list[PrepareFailure] = field(default_factory=list)

    @property
    def left_out(self) -> int:
        return self.num_samples - self.prepared

    @property
    def ok(self) -> bool:
        return not self.failures and self.left_out == 0

    def summary(self) -> list[str]:
        """Human-readable summary lines."""
        lines = [
            f"{self.annotation} ({self.format}): {plural(self.prepared, 'sample')} of {self.num_samples} prepared "
            f"in {self.out}: {plural(self.encoded, 'file')} encoded, {self.skipped} already finished"
        ]
        if self.output_annotation:
            lines.append(f"  new annotation: {self.output_annotation}")
        if self.failures:
            reasons = Counter(reason_kind(f.reason) for f in self.failures)
            lines.append(
                f"  {plural(len(self.failures), 'failure')}, {plural(self.left_out, 'sample')} left out: "
                + ", ".join(f"{k} {n}" for k, n in reasons.most_common())
            )
        else:
            lines.append("  no failures")
        return lines


def reason_kind(reason: str) -> str:
    """A failure's category for the summary's counts: missing, segment, truncated or undecodable."""
    if "not found" in reason:
        return "missing"
    if reason.startswith("segment"):
        return "segment"
    return "truncated" if "truncated" in reason else "undecodable"


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the short side scaled down to ``short_side`` (never up) and the aspect ratio kept,
    both sides even (H.264 in ``yuv420p`` needs them): a scaled long side to the nearest even number, as FFmpeg's
    ``scale=-2:256`` does (1920x1080 -> 456x256), an odd unscaled side one pixel down."""
    short, long = min(width, height), max(width, height)
    if short > short_side:
        long, short = 2 * round(long * short_side / (2 * short)), short_side
    short, long = max(2, short - short % 2), max(2, long - long % 2)
    return (long, short) if width >= height else (short, long)


def format_timestamp(seconds: float) -> str:
    """``'HH:MM:SS.ff'`` with up to 6 fraction digits (at least 2), never above ``seconds`` (frame boundaries
    written this way parse back to the same frame)."""
    micro = int(math.floor(seconds * 1e6 + 1e-3))
    whole, frac = divmod(micro, 1_000_000)
    hours, rest = divmod(whole, 3600)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{digits}"


# --------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class ClipSpec:
    """One output file: the source frames ``[first, stop)`` (``stop=None``: to the end) and, for a cut segment,
    ``count`` output frames."""

    output: str
    first: int = 0
    stop: int | None = None
    count: int | None = None


@dataclass(frozen=True)
class SourceJob:
    """Every output of one source file, written in one decoding pass."""

    source: str
    clips: tuple[ClipSpec, ...]
    settings: PrepareSettings
    threads: int = 1


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


# --------------------------------------------------------------------------------------------- encoding


class ClipWriter:
    """One output file being written: selects its frames of the source, scales and encodes them, cuts its audio
    window; writes ``NAME.part`` and renames it to ``NAME`` when complete."""

    def __init__(self, spec: ClipSpec, settings: PrepareSettings, threads: int):
        self.spec, self.settings, self.threads = spec, settings, threads
        self.part = spec.output + PART_SUFFIX
        self.container = None
        self.video = self.audio = None
        self.written = 0  # output frames encoded
        self.audio_written = 0
        self.pending: list = []  # audio of the clip that arrived before its first frame
        self.done = False

    def setup(self, src_rate: Fraction, out_rate: Fraction, audio_stream, copy_audio: bool) -> None:
        self.src_fps, self.out_rate = float(src_rate), out_rate
        self.ratio = float(src_rate / out_rate)  # source frames per output frame
        self.in_audio, self.copy_audio = audio_stream, copy_audio
        if audio_stream is not None and not copy_audio:
            rate = audio_stream.codec_context.sample_rate or audio_stream.rate
            self.audio_rate = rate
            self.a0 = round(self.spec.first / self.src_fps * rate)
            self.a1 = None if self.spec.stop is None else round(self.spec.stop / self.src_fps * rate)

    def source_index(self, j: int) -> int:
        """The source frame that output frame ``j`` shows."""
        return self.spec.first + math.floor(j * self.ratio + EPS)

    def video_done(self) -> bool:
        return self.spec.count is not None and self.written >= self.spec.count

    def audio_done(self, position: int, index: int) -> bool:
        """Whether the clip's audio window has been decoded (``position``: samples so far), or ended: the video is
        ``AUDIO_LAG`` seconds past the clip (source frame ``index``) without it, so the track ends before."""
        if self.in_audio is None or self.copy_audio:
            return True
        if self.a1 is None:
            return False
        return position >= self.a1 or index >= self.spec.stop + AUDIO_LAG * self.src_fps

    def wants(self, index: int) -> bool:
        return not self.video_done() and self.source_index(self.written) == index

    def open(self, width: int, height: int) -> None:
        Path(self.part).parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(self.part, "w", format="mp4")
        s = self.settings
        self.video = self.container.add_stream(
            "libx264", rate=self.out_rate, options={"crf": str(s.crf), "preset": s.preset}
        )
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.codec_context.thread_count = self.threads
        if self.in_audio is not None:
            if self.copy_audio:
                self.audio = self.container.add_stream_from_template(self.in_audio)
            else:
                rate = self.audio_rate if self.audio_rate in AAC_RATES else 48000
                self.audio = self.container.add_stream("aac", rate=rate)
                self.layout = channel_layout(self.in_audio.layout)
                self.audio.layout = self.layout
        pending, self.pending = self.pending, []
        for data in pending:
            self.write_audio(data)

    def add_video(self, frame, index: int) -> None:
        """Source frame ``index`` (scaled), encoded as often as the output's frame rate shows it."""
        while self.wants(index):
            frame.pts, frame.time_base = self.written, 1 / self.out_rate
            self.mux(self.video.encode(frame))
            self.written += 1

    def add_audio(self, data, position: int = 0) -> None:
        """An audio packet to copy, or decoded samples ``(channels, n)`` starting at source sample ``position``
        (the part inside the clip's window is kept)."""
        if not self.copy_audio:
            lo = max(self.a0 - position, 0)
            hi = data.shape[1] if self.a1 is None else min(data.shape[1], self.a1 - position)
            if hi <= lo:
                return
            data = data[:, lo:hi] if (lo, hi) != (0, data.shape[1]) else data
        self.write_audio(data)

    def write_audio(self, data) -> None:
        """A packet or samples of the clip: muxed or encoded, or kept until the file is opened."""
        if self.container is None:
            self.pending.append(data)
        elif self.copy_audio:
            data.stream = self.audio
            self.container.mux(data)
        else:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=self.layout)
            frame.sample_rate, frame.pts = self.audio_rate, self.audio_written
            frame.time_base = Fraction(1, self.audio_rate)
            self.audio_written += data.shape[1]
            self.mux(self.audio.encode(frame))

    def mux(self, packets) -> None:
        for packet in packets:
            self.container.mux(packet)

    def finish(self) -> None:
        """Flush the encoders and rename the file into place."""
        self.mux(self.video.encode(None))
        if self.audio is not None and not self.copy_audio:
            self.mux(self.audio.encode(None))
        self.container.close()
        self.container = None
        os.replace(self.part, self.spec.output)
        self.done = True

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except (av.error.FFmpegError, OSError, ValueError):
                pass
            self.container = None
        Path(self.part).unlink(missing_ok=True)


def upright(frame):
    """The decoded frame turned upright by its display matrix (quarter turns), as ``read_frames`` returns it."""
    turns = (frame.rotation // 90) % 4 if frame.rotation % 90 == 0 else 0
    if not turns:
        return frame
    img = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), turns))
    return av.VideoFrame.from_ndarray(img, format="rgb24")


def channel_layout(layout) -> str:
    """The layout the audio is encoded in: the source's when it names one, else the usual one for its channel count
    (``'2 channels'``, as PCM in Matroska often declares, becomes ``'stereo'``); stereo for other counts."""
    if "channels" not in layout.name:
        return layout.name
    return {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}.get(layout.nb_channels, "stereo")


def to_planar(resampler, frame) -> np.ndarray:
    """A decoded audio frame as float32 ``(channels, samples)``."""
    parts = [f.to_ndarray() for f in resampler.resample(frame)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((frame.layout.nb_channels, 0), np.float32)


def encode_source(job: SourceJob) -> list[tuple[str, str | None]]:
    """Write every clip of ``job`` in one pass over its source; ``(output, None)`` for each clip written and
    ``(output, reason)`` for each that failed."""
    writers = [ClipWriter(spec, job.settings, job.threads) for spec in job.clips]
    outcome: dict[str, str | None] = {}
    index = 0
    try:
        if not os.path.isfile(job.source):
            raise DataError("file not found")
        with av.open(job.source, metadata_errors="ignore") as source:
            if not source.streams.video:
                raise DataError("no video stream")
            video = source.streams.video[0]
            video.thread_type = "AUTO"
            video.codec_context.thread_count = job.threads
            src_rate = video.average_rate or video.guessed_rate
            if not src_rate:
                raise DataError("the video stream has no frame rate")
            out_rate = Fraction(job.settings.fps).limit_denominator(1001) if job.settings.fps else Fraction(src_rate)
            audio = source.streams.audio[0] if job.settings.audio and source.streams.audio else None
            # a whole file's AAC track is copied (its timing does not depend on the video's frame rate)
            copy = audio is not None and audio.codec_context.name == "aac" and all(s.stop is None for s in job.clips)
            for w in writers:
                w.setup(Fraction(src_rate), out_rate, audio, copy)
            resampler = None
            if audio is not None and not copy:
                layout = channel_layout(audio.layout)
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=writers[0].audio_rate)
            position = 0
            size = None
            streams = [video] + ([audio] if audio is not None else [])
            for packet in source.demux(*streams):
                if packet.stream is audio and copy:
                    if packet.dts is not None and packet.size:  # not the end-of-stream marker
                        writers[0].add_audio(packet)
                    continue
                for frame in packet.decode():
                    if packet.stream is video:
                        frame = upright(frame)
                        if size is None:
                            size = output_size(frame.width, frame.height, job.settings.short_side)
                        wanted = [w for w in writers if not w.done and w.wants(index)]
                        if wanted:
                            scaled = frame.reformat(*size, format="yuv420p", interpolation="BICUBIC")
                            scaled.pict_type = av.video.frame.PictureType.NONE
                            for w in wanted:
                                if w.container is None:
                                    w.open(*size)
                                w.add_video(scaled, index)
                        index += 1
                    else:
                        samples = to_planar(resampler, frame)
                        for w in writers:
                            if not w.done:
                                w.add_audio(samples, position)
                        position += samples.shape[1]
                for w in writers:
                    if not w.done and w.container is not None and w.video_done() and w.audio_done(position, index):
                        w.finish()
                if all(w.done for w in writers):
                    break
            for w in writers:  # the end of the source
                if w.done:
                    continue
                if w.spec.count is not None and not w.video_done():
                    last = w.source_index(w.spec.count - 1)
                    raise DataError(f"the video ended at frame {index}, before frame {last}: a truncated file?")
                if w.container is None:
                    raise DataError("the video stream has no decodable frames")
                w.finish()
    except (DataError, av.error.FFmpegError, OSError, ValueError) as err:
        reason = (
            str(err) if isinstance(err, DataError) else f"undecodable at frame {index}: corrupt or unreadable ({err})"
        )
        for w in writers:
            if not w.done:
                outcome[w.spec.output] = reason
    finally:
        for w in writers:
            if not w.done:
                w.abort()
    return [(w.spec.output, outcome.get(w.spec.output)) for w in writers]


# --------------------------------------------------------------------------------------------- the run


def check_settings_file(out: Path, settings: PrepareSettings) -> None:
    """Record ``settings`` in ``out/prepare.json``; a folder prepared with other settings is refused (its finished
    files would be skipped and mixed with differently encoded ones)."""
    path = out / SETTINGS_FILE
    record = asdict(settings)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != record:
            before = old if isinstance(old, dict) else {}
            diff = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in record.items() if before.get(k) != v)
            raise ConfigError(
                f"{out} was prepared with other settings ({diff or 'unreadable ' + SETTINGS_FILE}): use another "
                f"output folder, or delete {path} and the files to redo them"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def resolve(path: str, root: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or root is None else root / p


def prepare_dataset(
    annotation: str | Path,
    root: str | Path | None,
    out: str | Path,
    *,
    format: str | None = None,
    settings: PrepareSettings = PrepareSettings(),
    output_annotation: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    **options,
) -> PrepareReport:
    """Re-encode every video of ``annotation`` (paths relative to ``root``) into ``out`` and write the new
    annotation (default ``out/<annotation's name>``); ``options`` go to the format's parser (``video_template=``,
    ``classes=``, ...) and apply to the new file too. Returns a :class:`PrepareReport`; a malformed annotation
    file raises :class:`DataError`, an unsupported format or bad settings :class:`ConfigError`.
    """
    settings.check()
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive number of processes, got {workers!r}")
    if options.get("audio_template") is not None:
        raise ConfigError(
            "audio_template: separate audio files are not prepared; prepare the videos without it (their own "
            "tracks are kept), and point the new annotation at the audio files with data.root or an absolute template"
        )
    name = format or guess_format(annotation)
    if name not in SUPPORTED_FORMATS:
        raise ConfigError(
            f"{annotation}: preparing the {name} format is not supported; supported formats: "
            f"{', '.join(SUPPORTED_FORMATS)}"
        )
    ann = parse_annotations(annotation, name, **options)
    root = Path(root) if root is not None else None
    out = Path(out)
    new_annotation = Path(output_annotation) if output_annotation else out / Path(annotation).name
    if new_annotation.resolve() == Path(annotation).resolve():
        raise ConfigError(f"{new_annotation}: the new annotation file would overwrite the input; choose another")
    check_settings_file(out, settings)
    if ann.format == "ucf101" and options.get("classes") is None:  # the parser looks for classInd.txt beside it
        new_annotation.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(annotation).with_name("classInd.txt"), new_annotation.with_name("classInd.txt"))
    report = PrepareReport(str(annotation), ann.format, str(out), None, len(ann.samples))
    failed: dict[str, PrepareFailure] = {}  # per source path

    cut = settings.cut_segments and ann.format in SEGMENT_FORMATS
    samples, cuts = plan_cuts(ann.samples, root, settings, failed, progress) if cut else (ann.samples, {})
    text = rewrite_annotation(str(annotation), ann.format, samples, cuts, settings.fps)
    new_paths = reparse_paths(text, samples, new_annotation, ann.format, options)

    jobs: dict[str, list[ClipSpec]] = defaultdict(list)
    users: dict[str, list[Sample]] = defaultdict(list)  # output -> samples
    origin: dict[str, Sample] = {}  # output -> its first sample
    for s in samples:
        output = new_paths[s.id]
        if output.is_absolute():
            raise ConfigError(f"{s.source}: the new path {output} is absolute; the path template must be relative")
        output = str(out / output)
        first = origin.setdefault(output, s)
        if first.path != s.path:
            raise ConfigError(
                f"{s.source}: {s.path} and {first.path} ({first.source}) would both be written to {output}"
            )
        if first is s:
            c = cuts.get(s.id)
            spec = ClipSpec(output) if c is None else ClipSpec(output, c.clip_first, c.clip_stop, c.count)
            jobs[str(resolve(s.path, root))].append(spec)
        users[output].append(s)
    todo = []
    for source, specs in jobs.items():
        if len(specs) > 1 and any(s.stop is None for s in specs):
            raise ConfigError(f"{source}: whole-file outputs {specs[0].output} and {specs[1].output} share the source")
        remaining = tuple(s for s in specs if not os.path.isfile(s.output))
        report.skipped += len(specs) - len(remaining)
        if remaining:
            todo.append(SourceJob(source, remaining, settings))
    outcomes = run_jobs(todo, workers, progress)
    bad_outputs: set[str] = set()
    for job, results in zip(todo, outcomes):
        for output, reason in results:
            if reason is None:
                report.encoded += 1
                continue
            bad_outputs.add(output)
            ids = tuple(s.id for s in users[output])
            where = job.source if len(job.clips) == 1 else f"{job.source} (segment {ids[0]})"
            failed.setdefault(where, PrepareFailure(where, reason))
            old = failed[where]
            failed[where] = replace(old, samples=old.samples + ids)
    report.failures = list(failed.values())
    for f in report.failures:
        log.info("%s", f)
    kept = [s for s in samples if str(out / new_paths[s.id]) not in bad_outputs]
    report.prepared = len(kept)
    if kept:
        write_atomically(new_annotation, text.text([line_of(s) for s in kept]))
        report.output_annotation = str(new_annotation)
    return report


def plan_cuts(samples, root, settings, failed, progress) -> tuple[list[Sample], dict[str, Cut]]:
    """Each sample's clip (see :func:`plan_cut`), from a probe of its video; samples whose video cannot be probed
    or whose segment lies outside it go to ``failed`` (per source) and are dropped."""
    from .decode import probe

    by_path: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_path[s.path].append(s)
    kept, cuts = [], {}
    for rel, group in tqdm(by_path.items(), desc="probing videos", unit="file", disable=not progress):
        path = str(resolve(rel, root))
        try:
            info = probe(path)
        except DataError as err:
            failed[path] = PrepareFailure(path, str(err).removeprefix(f"{path}: "), tuple(s.id for s in group))
            continue
        for s in group:
            try:
                cuts[s.id] = plan_cut(s, info.num_frames, info.fps, settings, path)
                kept.append(s)
            except DataError as err:
                where = f"{path} (segment {s.id}, {s.source})"
                failed[where] = PrepareFailure(where, "segment: " + str(err).removeprefix(f"{path}: "), (s.id,))
    return kept, cuts


def reparse_paths(text: AnnotationText, samples, new_annotation: Path, fmt: str, options) -> dict[str, Path]:
    """The path of each sample in the rewritten annotation, as the format's parser reads it (the same options)."""
    new_annotation.parent.mkdir(parents=True, exist_ok=True)
    draft = new_annotation.with_name(f".{new_annotation.name}.draft")
    draft.write_text(text.text([line_of(s) for s in samples]), encoding="utf-8")
    try:
        parsed = parse_annotations(draft, fmt, **options)
    finally:
        draft.unlink(missing_ok=True)
    return {s.id: Path(s.path) for s in parsed.samples}


def write_atomically(path: Path, text: str) -> None:
    part = path.with_name(path.name + PART_SUFFIX)
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def run_jobs(jobs: list[SourceJob], workers: int, progress: bool) -> list[list[tuple[str, str | None]]]:
    """Each job's outcomes, in order; ``workers`` processes share the cores (decoder and encoder threads per
    process: cores / workers)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [replace(j, threads=threads) for j in jobs]
    total = sum(len(j.clips) for j in jobs)
    results: list = [None] * len(jobs)
    with tqdm(total=total, desc="encoding", unit="file", disable=not progress) as bar:
        if workers == 1 or len(jobs) <= 1:
            for k, job in enumerate(jobs):
                results[k] = encode_source(job)
                bar.update(len(job.clips))
            return results
        # fork, as the training loader's workers: a worker only decodes and encodes with PyAV (no torch), and a
        # spawned worker would spend seconds importing the package first
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(encode_source, job): k for k, job in enumerate(jobs)}
            for future in concurrent.futures.as_completed(futures):
                k = futures[future]
                try:
                    results[k] = future.result()
                except Exception as err:  # a worker that died (killed, out of memory): its files are named
                    results[k] = [(c.output, f"the worker process failed ({err!r})") for c in jobs[k].clips]
                bar.update(len(jobs[k].clips))
    return results
