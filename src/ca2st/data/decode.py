"""Decoding with PyAV: exact frames at given indices, an audio window as a mono waveform, and stream facts.

Frame ``i`` is the ``i``-th frame (0-based) that a sequential decode of the first video stream returns, in
presentation order (an MP4 edit list's hidden frames are not frames: frame 0 is the first presented one); frames
come out upright (a display matrix's quarter turns are applied unless ``autorotate=False``). Two strategies give
exactly that frame:

* ``sequential``: decode from the start, keep the wanted frames, stop after the last one. Exact for every
  container and codec.
* ``indexed``: look the frames up in the file's frame index (:mod:`ca2st.data.frame_index`: every frame's
  presentation timestamp and the keyframes, built once per file by demuxing the video stream and cached),
  group the wanted frames into runs, seek to the keyframe before each run (only where the frames that the
  seek skips cost more to decode than the seek itself) and decode forward; frames that are not wanted and
  that no other frame refers to are not decoded (``skip_frame``; no other frame changes). Each run must start
  on a keyframe of the index, and every frame is identified by its timestamp and must come out in order
  (only unwanted frames may be missing). Used only for MP4/MOV and Matroska/WebM streams other than VP8 (AVI
  timestamps are synthetic and MPEG-4 packed B-frames shift them; seeking VP8 WebM broke in our
  measurements); any surprise (an unindexable stream, a run that starts elsewhere, a timestamp that is no
  frame's, a wanted frame missing or out of order, a decoding error) falls back to ``sequential``.

Frames are converted to RGB by one scaler context per thread, and the demuxer skips the other streams' packets.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from ..errors import DataError
from .audio import resample
from .frame_index import FrameIndex, NotIndexable, cached_index, demux_only

logger = logging.getLogger(__name__)

__all__ = [
    "VideoInfo",
    "probe",
    "has_audio",
    "display_rotation",
    "read_frames",
    "read_audio",
    "audio_window",
    "decoder_threads",
]

# Containers (FFmpeg demuxer names) whose video timestamps we trust for seeking, and codecs excluded there.
_SEEK_FORMATS = ("mov", "mp4", "matroska", "webm")
_NO_SEEK_CODECS = ("vp8",)
_SEEK_FRAMES = 6  # a seek costs about as much CPU as decoding this many frames, at any size (benchmarks/RESULTS.md)
_END_SHORTFALL = 2  # decoded frames missing at the end of a header's count: an encoder quirk, not truncation
_AUDIO_SEEK_AFTER = 30.0  # seconds: later windows are reached by seeking when timestamps are sample-exact
_AUDIO_SEEK_PREROLL = 1.0  # seconds decoded before the window after a seek (decoder warm-up)
_AUDIO_CONTEXT = 0.05  # seconds of audio decoded on each side of the window for the resampler


_CONVERTERS = threading.local()  # per thread: VideoReformatters by (process, threads), kept between frames


class _Fallback(Exception):
    """The seek plan cannot be trusted for this file; decode sequentially instead."""


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a media file. ``num_frames_source`` says how ``num_frames`` was obtained:
    ``"container"`` (declared in the header), ``"packets"`` (video packets counted by demuxing, edit-list
    hidden ones left out) or ``"decoded"`` (frames counted by decoding; exact by definition).
    ``header_frames`` is the count the header declares (0 when it declares none); it can differ from
    ``num_frames`` (an AVI header counting one frame too many, an MP4 edit list hiding frames)."""

    path: str
    num_frames: int
    num_frames_source: str
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    container: str
    has_audio: bool
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_codec: str | None = None
    audio_duration: float | None = None
    header_frames: int = 0


# --------------------------------------------------------------------------------------------- opening


def _check_path(path) -> str:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a media file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes), not a media file")
    return os.fspath(p)


def _open(path: str):
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: not a readable media file, or corrupt/truncated ({e})") from e


def _video_stream(container, path: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DataError(f"{path}: no video stream (streams found: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise DataError(f"{path}: no decoder for the video codec of this file")
    return stream


def _audio_stream(container, path: str):
    if not container.streams.audio:
        raise DataError(f"{path}: no audio track (the file has only {_stream_kinds(container)})")
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise DataError(f"{path}: no decoder for the audio codec of this file")
    return stream


def _stream_kinds(container) -> str:
    kinds = sorted({s.type for s in container.streams})
    return " and ".join(f"{k} streams" for k in kinds) if kinds else "no streams"


def _seconds(value, time_base) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


# --------------------------------------------------------------------------------------------- probing


def has_audio(path) -> bool:
    """Whether the file has an audio track (read from the header; nothing is decoded)."""
    path = _check_path(path)
    with _open(path) as container:
        return bool(container.streams.audio)


_PROBE_CACHE: dict[tuple, VideoInfo] = {}
_PROBE_CACHE_SIZE = 65536


def probe(path, count: str = "auto", *, index_cache: str | os.PathLike | None = None) -> VideoInfo:
    """Stream facts of a video file; ``num_frames`` is never a header's count that outruns the frames.

    ``count`` chooses how ``num_frames`` is found:

    * ``"auto"``: the header's count where it can be trusted; AVI files are decoded (their headers often
      count a frame or two that never decode, as in many UCF-101/HMDB XviD files); MP4/MOV files whose
      declared count disagrees with their duration (an edit list, as left by ``ffmpeg -c copy`` cuts, hides
      frames) and files without a declared count (WebM, MKV) have their presented packets counted. An AVI
      that decodes more than two frames fewer than its header declares raises DataError (truncated);
    * ``"packets"``: always count packets; ``"decode"``: decode the whole stream (slow, exact, detects
      truncation: a decoding error raises).

    Results are cached in memory per file (path, size and modification time), so a dataset pays a slow count
    once per process. Where packets are counted by demuxing a seekable stream, the count is the length of the
    file's frame index, which :func:`read_frames` then finds cached (``index_cache``: as there).
    """
    if count not in ("auto", "packets", "decode"):
        raise ValueError(f"count must be 'auto', 'packets' or 'decode', got {count!r}")
    path = _check_path(path)
    stat = os.stat(path)
    key = (path, count, stat.st_size, stat.st_mtime_ns)
    info = _PROBE_CACHE.get(key)
    if info is None:
        info = _probe(path, count, index_cache)
        if len(_PROBE_CACHE) >= _PROBE_CACHE_SIZE:
            _PROBE_CACHE.clear()
        _PROBE_CACHE[key] = info
    return info


def _probe(path: str, count: str, index_cache) -> VideoInfo:
    with _open(path) as container:
        stream = _video_stream(container, path)
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = _seconds(stream.duration, stream.time_base)
        if duration is None:
            duration = container.duration / av.time_base if container.duration else 0.0
        audio = container.streams.audio[0] if container.streams.audio else None
        info = dict(
            path=path,
            duration=duration,
            width=ctx.width,
            height=ctx.height,
            codec=ctx.name,
            container=container.format.name,
            has_audio=audio is not None,
            header_frames=max(0, stream.frames),
        )
        if audio is not None:
            actx = audio.codec_context
            adur = _seconds(audio.duration, audio.time_base)
            if adur is None and container.duration:
                adur = container.duration / av.time_base
            info.update(
                audio_sample_rate=actx.sample_rate or audio.rate,
                audio_channels=actx.channels,
                audio_codec=actx.name,
                audio_duration=adur,
            )
        auto = count == "auto"
        if auto:
            count = _auto_count(container, stream, fps)
        if count == "container":
            n, source = stream.frames, "container"
        elif count == "decode":
            stream.thread_type = "AUTO"
            n, source = sum(1 for _ in _decode_frames(container, stream, path)), "decoded"
            if auto and stream.frames - n > _END_SHORTFALL:
                raise DataError(
                    f"{path}: the header declares {stream.frames} frames but only {n} decode: the file looks "
                    "truncated (re-download or re-encode it)"
                )
        else:
            n, source = _count_packets(path, container, stream, index_cache), "packets"
    if n == 0:
        raise DataError(f"{path}: the video stream has zero frames")
    if info["header_frames"] and n != info["header_frames"]:
        logger.debug("%s: the header declares %d frames, %d by %s", path, info["header_frames"], n, source)
    if not fps and duration:
        fps = n / duration
    return VideoInfo(num_frames=n, num_frames_source=source, fps=fps, **info)


def _count_packets(path: str, container, stream, index_cache) -> int:
    """Presented video packets (empty and edit-list hidden ones left out): read from the demuxer's index when it
    lists the whole stream (MP4/MOV: no media data is read), else the length of the frame index (seekable
    streams: built by demuxing once, cached for :func:`read_frames`), else by demuxing."""
    entries = stream.index_entries
    if "mov" in container.format.name.split(",") and 0 < len(entries) == stream.frames:
        return sum(1 for e in entries if e.size and not e.is_discard)
    if _seek_allowed(container, stream):
        try:
            return cached_index(path, index_cache).num_frames
        except NotIndexable as why:
            logger.debug("%s: counting packets without an index (%s)", path, why)
    return sum(1 for p in container.demux(stream) if p.size and not p.is_discard)


def _auto_count(container, stream, fps: float) -> str:
    """How ``probe(count="auto")`` counts frames in this file: ``"container"``, ``"packets"`` or ``"decode"``."""
    if stream.frames <= 0:
        return "packets"
    if "avi" in container.format.name.split(","):
        return "decode"  # AVI headers over-count; packets too (XviD packed B-frames leave empty placeholders)
    duration = _seconds(stream.duration, stream.time_base)
    if fps and duration is not None and abs(duration * fps - stream.frames) >= 1:
        return "packets"  # an edit list (or a wrong header): count the presented packets
    return "container"


# --------------------------------------------------------------------------------------------- frames


def _decode_frames(container, stream, path: str) -> Iterable:
    """Decoded frames of ``stream``; FFmpeg errors become DataError naming the file."""
    i = 0
    try:
        for frame in container.decode(stream):
            yield frame
            i += 1
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: decoding failed after {i} frames: corrupt or truncated video ({e})") from e


def decoder_threads(threads: int | None = None) -> int:
    """Decoder threads to use: ``threads`` when given (0: FFmpeg's choice, about one per core), else 1 inside a
    DataLoader worker (the workers already keep the cores busy; more threads per worker compete for them) and 0
    in any other process."""
    if threads is not None:
        return max(0, int(threads))
    return 1 if torch.utils.data.get_worker_info() is not None else 0


def _prepare(container, stream, threads: int) -> None:
    """Decode ``stream`` alone, with ``threads`` (frame and slice threading)."""
    demux_only(container, stream)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads


def _to_rgb(frame, autorotate: bool, threads: int) -> np.ndarray:
    """The frame as ``(H, W, 3)`` uint8 RGB, turned upright by its display matrix when ``autorotate``.

    The converter (a scaler with ``threads`` threads, as many as the decoder) is kept per thread and process: its
    cached scaler context makes the conversion several times cheaper than ``frame.to_ndarray(format="rgb24")``,
    which sets one up (and starts its threads) per frame, with the same pixels; a DataLoader worker never
    inherits its parent's scaler, whose threads did not survive the fork."""
    converters = getattr(_CONVERTERS, "by_key", None)
    if converters is None:
        converters = _CONVERTERS.by_key = {}
    key = (os.getpid(), threads)
    converter = converters.get(key)
    if converter is None:
        converter = converters[key] = VideoReformatter()
    img = converter.reformat(frame, format="rgb24", threads=threads).to_ndarray()
    turns = _quarter_turns(frame) if autorotate else 0
    return np.ascontiguousarray(np.rot90(img, turns)) if turns else img


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that the frame's display matrix asks for (0 without one)."""
    angle = frame.rotation
    if angle % 90:
        logger.debug("display rotation of %s degrees is not a multiple of 90; ignored", angle)
        return 0
    return (angle // 90) % 4


def display_rotation(path) -> int:
    """The display matrix's rotation of the first video stream, in degrees counter-clockwise (0, 90, 180 or
    270; 0 without one), read from the first decoded frame. Phone videos store portrait footage sideways with
    such a matrix; :func:`read_frames` applies it unless ``autorotate=False``."""
    path = _check_path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        frame = next(iter(_decode_frames(container, stream, path)), None)
    if frame is None:
        raise DataError(f"{path}: the video stream has zero decodable frames")
    return _quarter_turns(frame) * 90


def _expected_frames(container, stream) -> tuple[int, str]:
    """The frame count the header declares, or estimates from its duration and frame rate (0 if unknown)."""
    if stream.frames > 0:
        return stream.frames, "declares"
    rate = stream.average_rate or stream.guessed_rate
    duration = _seconds(stream.duration, stream.time_base)
    if duration is None and container.duration:
        duration = container.duration / av.time_base
    return (int(round(duration * rate)), "suggests") if rate and duration else (0, "")


def _out_of_range(container, stream, path: str, index: int, count: int) -> DataError:
    if count == 0:
        return DataError(f"{path}: the video stream has zero decodable frames")
    msg = f"{path}: frame index {index} is out of range: the video has {count} frames (valid 0..{count - 1})"
    expected, verb = _expected_frames(container, stream)
    tolerance = _END_SHORTFALL if verb == "declares" else max(_END_SHORTFALL, count // 20)
    if expected > count + tolerance:
        msg += f"; the header {verb} {expected} frames, so the file looks truncated"
    elif expected > count:
        msg += f" (the header {verb} {expected}: the last ones never decode, which is the end of the video)"
    return DataError(msg)


def _read_sequential(
    container, stream, path: str, wanted: Sequence[int], autorotate: bool, threads: int
) -> dict[int, np.ndarray]:
    targets = set(wanted)
    last = max(wanted)
    out: dict[int, np.ndarray] = {}
    count = 0
    for i, frame in enumerate(_decode_frames(container, stream, path)):
        count = i + 1
        if i in targets:
            out[i] = _to_rgb(frame, autorotate, threads)
        if i >= last:
            break
    if len(out) < len(targets):
        missing = min(t for t in targets if t not in out)
        raise _out_of_range(container, stream, path, missing, count)
    return out


def _seek_allowed(container, stream) -> bool:
    names = container.format.name.split(",")
    return any(n in _SEEK_FORMATS for n in names) and stream.codec_context.name not in _NO_SEEK_CODECS


def _plan(index: FrameIndex, targets: list[int], seek_cost: float) -> list[tuple[int | None, int, int]]:
    """Decode runs for sorted ``targets``: (keyframe timestamp to seek to, or None to decode on from the start of
    the file; first frame the run presents; last target). A target starts a new run when the frames that seeking
    to its keyframe skips cost more to decode than the seek."""
    runs: list[list] = []
    position = -1  # the last frame the decoder will have presented
    for t in targets:
        key, first = index.keyframe_before(t)
        if first - position - 1 > seek_cost:
            runs.append([key, first, t])
        elif runs:
            runs[-1][2] = t
        else:
            runs.append([None, 0, t])
        position = t
    return [tuple(r) for r in runs]


def _read_indexed(
    container, stream, index: FrameIndex, runs, targets: list[int], autorotate: bool, threads: int
) -> dict:
    """Frames ``targets`` decoded along ``runs``, or :class:`_Fallback`. Each run must start on a keyframe of the
    index (the first packet after the seek), and every frame is identified by its timestamp and must come out
    in order; frames between two wanted ones may be missing: the decoder skips the frames that no other frame
    refers to, unless they are wanted (``skip_frame``), which changes no other frame."""
    wanted = set(targets)
    wanted_pts = {int(index.pts[t]) for t in targets}
    keys = set(index.key_pts.tolist())
    ctx = stream.codec_context
    out: dict[int, np.ndarray] = {}
    for key, first, last in runs:
        expect = first  # the next frame this run must present
        try:
            if key is not None:
                container.seek(key, stream=stream, backward=True, any_frame=False)
            landed = False
            for packet in container.demux(stream):
                if not landed and packet.size:
                    if packet.pts not in keys or (key is not None and packet.pts > key):
                        raise _Fallback(f"the run to frame {last} starts on a packet at {packet.pts}, not a keyframe")
                    landed = True
                ctx.skip_frame = "NONREF" if packet.size and packet.pts not in wanted_pts else "DEFAULT"
                for frame in packet.decode():
                    i = index.frame_of(frame.pts)
                    if i is None:
                        raise _Fallback(f"decoded timestamp {frame.pts} is no frame's in the index")
                    if i < expect:
                        continue  # the seek landed on an earlier keyframe, or an open GOP's leading frame
                    if i > expect and not wanted.isdisjoint(range(expect, i)):
                        raise _Fallback(f"frame {i} came out where frame {expect} was due")
                    expect = i + 1
                    if i in wanted:
                        out[i] = _to_rgb(frame, autorotate, threads)
                if expect > last:
                    break
        except av.error.FFmpegError as e:  # a real corruption is reported by the sequential pass
            raise _Fallback(f"decoding from a keyframe failed ({e})") from e
        finally:
            ctx.skip_frame = "DEFAULT"
        if expect <= last:
            raise _Fallback(f"the stream ended before frame {last}")
    return out


def frame_numbers(indices, path: str = "") -> list[int]:
    """``indices`` (a sequence, array or tensor) as Python ints. Integral floats, NumPy integers and 0-d tensors
    pass; a fractional, NaN or infinite float, a bool, a string or anything else raises :class:`TypeError`
    naming the value (``1.7`` is never truncated to frame 1)."""
    values = indices.tolist() if hasattr(indices, "tolist") else indices
    if not isinstance(values, (list, tuple, range)):
        values = [values]  # one index (a 0-d tensor or array)
    out = []
    for value in values:
        number = value.item() if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 else value
        if isinstance(number, (bool, np.bool_)) or not isinstance(number, (numbers.Integral, numbers.Real)):
            raise TypeError(f"{path}: frame index {value!r} is not an integer: indices are 0-based frame numbers")
        if not isinstance(number, numbers.Integral) and not (math.isfinite(number) and float(number).is_integer()):
            raise TypeError(f"{path}: frame index {value!r} is not a whole number: indices are 0-based frame numbers")
        out.append(int(number))
    return out


def read_frames(
    path,
    indices,
    *,
    method: str = "auto",
    threads: int | None = None,
    autorotate: bool = True,
    index_cache: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Frames at 0-based ``indices`` of the first video stream, as uint8 RGB ``(T, H, W, 3)`` in the order asked.

    Indices may repeat and be unsorted. ``method``: ``"auto"`` (seek where it is safe and pays off, otherwise
    decode on), ``"sequential"`` or ``"seek"`` (seek to every run's keyframe; sequential where seeking is unsafe).
    ``threads``: decoder threads; ``None``: :func:`decoder_threads` (one inside a DataLoader worker, FFmpeg's
    choice elsewhere). ``autorotate``: turn frames upright by the stream's display matrix (phone videos; quarter
    turns only, as FFmpeg's player does; a mirroring matrix is applied as its rotation); False returns them as
    stored. ``index_cache``: a folder for the file's frame index (:mod:`ca2st.data.frame_index`), so that other
    processes find it; ``None``: kept in memory only.
    Raises DataError naming the file for a missing, unreadable, corrupt or truncated file, a file without video,
    zero frames, or an index out of range (the message gives the frame count).
    """
    if method not in ("auto", "sequential", "seek"):
        raise ValueError(f"method must be 'auto', 'sequential' or 'seek', got {method!r}")
    path = _check_path(path)
    idx = frame_numbers(indices, path)
    if not idx:
        raise DataError(f"{path}: no frame indices requested")
    if min(idx) < 0:
        raise DataError(f"{path}: frame index {min(idx)} is negative; indices are 0-based frame numbers")
    targets = sorted(set(idx))
    threads = decoder_threads(threads)
    frames = None
    with _open(path) as container:
        stream = _video_stream(container, path)
        _prepare(container, stream, threads)
        indexed = method != "sequential" and _seek_allowed(container, stream)
        if indexed:
            try:
                index = cached_index(path, index_cache)
                if targets[-1] >= index.num_frames:
                    raise _Fallback("an index beyond the indexed frames")  # the sequential pass reports the count
                runs = _plan(index, targets, 0 if method == "seek" else _SEEK_FRAMES)
                frames = _read_indexed(container, stream, index, runs, targets, autorotate, threads)
                seeks = sum(key is not None for key, _, _ in runs)
                logger.debug("%s: %d frames by %d seeks", path, len(targets), seeks)
            except (_Fallback, NotIndexable) as why:
                logger.debug("%s: decoding sequentially (%s)", path, why)
        else:
            frames = _read_sequential(container, stream, path, targets, autorotate, threads)
    if frames is None:  # a fresh container: the indexed pass moved the first one
        with _open(path) as container:
            stream = _video_stream(container, path)
            _prepare(container, stream, threads)
            frames = _read_sequential(container, stream, path, targets, autorotate, threads)
    out = np.empty((len(idx), *frames[targets[0]].shape), dtype=np.uint8)
    for k, i in enumerate(idx):
        out[k] = frames[i]
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------- audio


def _frame_samples(frame) -> np.ndarray:
    """A decoded audio frame as float64 ``(channels, samples)`` in [-1, 1]."""
    fmt = frame.format
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not fmt.is_planar:
        arr = arr.reshape(-1, channels).T
    name = fmt.name.rstrip("p")
    if name == "u8":
        return (arr.astype(np.float64) - 128.0) / 128.0
    if name in ("s16", "s32", "s64"):
        return arr.astype(np.float64) / float(2 ** (8 * arr.dtype.itemsize - 1))
    return arr.astype(np.float64)


def read_audio(path, start: float | None = None, end: float | None = None, sample_rate: int = 16000) -> torch.Tensor:
    """Mono float32 waveform in [-1, 1] of the first audio track between ``start`` and ``end`` seconds.

    Time 0 is the first decoded sample (``None``: from the start / to the end of the track). Mono is the mean of
    the channels; it is then resampled to ``sample_rate`` with a band-limited windowed-sinc resampler
    (:func:`ca2st.data.audio.resample`), using decoded audio on both sides of the window so the edges are
    exact. Output sample ``n`` is the sound at ``start + n / sample_rate``; the length is
    ``round(end * sample_rate) - round(start * sample_rate)``, cut short if ``end`` passes the end of the track.
    Raises DataError for a missing or unreadable file, no audio track, or a window outside the audio.
    """
    path = _check_path(path)
    if start is not None and start < 0:
        raise DataError(f"{path}: audio window start {start} s is negative")
    if start is not None and end is not None and end <= start:
        raise DataError(f"{path}: empty audio window [{start}, {end}] s (end must be after start)")
    if end is not None and end <= 0:
        raise DataError(f"{path}: audio window end {end} s is not after the start of the track")
    with _open(path) as container:
        stream = _audio_stream(container, path)
        demux_only(container, stream)
        stream.thread_type = "AUTO"
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise DataError(f"{path}: the audio track declares no sample rate")
        t0 = 0.0 if start is None else float(start)
        lo = max(0, int(math.floor((t0 - _AUDIO_CONTEXT) * rate)))  # first source sample needed
        hi = None if end is None else int(math.ceil((float(end) + _AUDIO_CONTEXT) * rate))
        mono, first, seen, eof = _decode_audio(container, stream, path, rate, lo, hi)
    if seen == 0:
        raise DataError(f"{path}: the audio track has no decodable samples")
    if eof and int(round(t0 * rate)) >= seen:
        raise DataError(
            f"{path}: audio window [{start}, {end}] s is outside the audio track, which is {seen / rate:.3f} s long"
        )
    wave = torch.from_numpy(mono)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        step = rate // g  # start resampling on a block boundary so output samples fall on the target grid
        offset = (first // step) * step
        wave = torch.nn.functional.pad(wave, (first - offset, 0))
        wave = resample(wave, rate, sample_rate)
        origin = offset // step * (sample_rate // g)  # output index of wave[0]
    else:
        origin = first
    limit = math.ceil(seen * sample_rate / rate) if eof else None  # output samples the track holds
    n0 = int(round(t0 * sample_rate))
    n1 = limit if end is None else int(round(float(end) * sample_rate))
    if limit is not None and n1 > limit:
        logger.debug(
            "%s: audio window end %s s passes the track end (%.3f s); output cut short", path, end, seen / rate
        )
        n1 = limit
    return wave[n0 - origin : n1 - origin].clamp(-1.0, 1.0).contiguous()


def audio_window(
    wave: torch.Tensor, wave_start: float, start: float, end: float, sample_rate: int = 16000, path: str = ""
) -> torch.Tensor:
    """The ``[start, end]`` seconds of ``wave = read_audio(path, wave_start, ..., sample_rate)``: the samples
    ``read_audio(path, start, end, sample_rate)`` returns (the same output grid, so one read of a long span serves
    every window inside it). Raises DataError, as ``read_audio`` does, when ``start`` lies past the end of the
    track (``wave`` ends there)."""
    origin = int(round(float(wave_start) * sample_rate))
    n0, n1 = int(round(float(start) * sample_rate)) - origin, int(round(float(end) * sample_rate)) - origin
    if n0 < 0:
        raise ValueError(f"window start {start} s is before the waveform's start {wave_start} s")
    if n0 >= wave.shape[0]:
        raise DataError(
            f"{path}: audio window [{start}, {end}] s is outside the audio track, which ends at "
            f"{wave_start + wave.shape[0] / sample_rate:.3f} s"
        )
    return wave[n0:n1]


def _decode_audio(container, stream, path: str, rate: int, lo: int, hi: int | None):
    """Mono float32 samples covering source samples ``[lo, hi)`` (``hi=None``: to the end), the index of the
    first returned sample, the number of samples seen and whether the end of the track was reached.
    Seeks for late windows when the stream's timestamps are sample-exact."""
    tb = stream.time_base
    if lo > _AUDIO_SEEK_AFTER * rate and tb is not None and tb.numerator == 1 and tb.denominator % rate == 0:
        try:
            return _decode_audio_from(container, stream, path, lo, hi, seek=True)
        except _Fallback as why:
            logger.debug("%s: decoding audio from the start (%s)", path, why)
            container.seek(0, stream=stream, backward=True)
    return _decode_audio_from(container, stream, path, lo, hi, seek=False)


def _decode_audio_from(container, stream, path, lo, hi, seek: bool):
    chunks = []
    first = None
    position = 0
    eof = True
    origin = stream.start_time or 0
    if seek:
        rate = stream.codec_context.sample_rate
        target = max(0, lo - int(_AUDIO_SEEK_PREROLL * rate))
        container.seek(origin + int(Fraction(target, rate) / stream.time_base), stream=stream, backward=True)
    try:
        for k, frame in enumerate(container.decode(stream)):
            if seek and k == 0:
                if frame.pts is None:
                    raise _Fallback("audio frame without timestamp after seek")
                position = int(round(float((frame.pts - origin) * stream.time_base) * frame.sample_rate))
                if position > lo:
                    raise _Fallback("audio seek landed after the window")
            samples = _frame_samples(frame).mean(axis=0).astype(np.float32)
            n = samples.shape[0]
            if position + n > lo:
                if first is None:
                    first = max(lo, position)
                chunks.append(samples[max(0, lo - position) :])
            position += n
            if hi is not None and position >= hi:
                eof = False
                break
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: audio decoding failed at sample {position}: corrupt or truncated ({e})") from e
    if not chunks:
        return np.zeros(0, dtype=np.float32), position, position, eof
    mono = np.concatenate(chunks)
    if hi is not None:
        mono = mono[: max(0, hi - first)]
    return mono, first, position, eof
