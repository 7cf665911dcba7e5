"""Writing the outputs: each source decoded once, its clips scaled, re-timed and encoded, in parallel processes."""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm.auto import tqdm

from ...errors import DataError
from .records import AAC_RATES, AUDIO_LAG, EPS, PART_SUFFIX, PrepareSettings


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the short side scaled down to ``short_side`` (never up) and the aspect ratio kept,
    both sides even (H.264 in ``yuv420p`` needs them): a scaled long side to the nearest even number, as FFmpeg's
    ``scale=-2:256`` does (1920x1080 -> 456x256), an odd unscaled side one pixel down."""
    short, long = min(width, height), max(width, height)
    if short > short_side:
        long, short = 2 * round(long * short_side / (2 * short)), short_side
    short, long = max(2, short - short % 2), max(2, long - long % 2)
    return (long, short) if width >= height else (short, long)


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
