"""Decoders side by side (``bench_data.py --compare``): CPU ms per clip, ratio to the best frame-exact peer, and
frame-exactness, for the access patterns of video-recognition training and testing.

Media are generated (H.264 unless said): K400-like 10 s 30 fps 568×320 with AAC audio and a 3 s keyframe
interval; SSV2-like 4 s 12 fps 427×240 VP9 WebM; EK100-like untrimmed 50 fps 456×256 with an AAC track
(``--ek-minutes``, 10 by default); 1080p 30 fps 10 s. Every decoder gets one thread (a DataLoader worker's
share of the cores) and the decoders take turns clip by clip, in a rotating order, in one process. A decoder
is frame-exact on a pattern when every frame it returns is closest to the reference frame of the same number
(ca2st's sequential decode, which numbers frames as they come out of a decode from the start) and no farther
from it than RGB conversions differ (mean absolute difference ≤ 3).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

from ca2st.data import frame_index
from ca2st.data.decode import probe, read_frames

EXACT_MAD = 3.0  # mean absolute difference (0-255) that RGB conversions of the same frame stay under


@dataclass(frozen=True)
class Media:
    name: str
    seconds: float
    fps: int
    width: int
    height: int
    codec: str = "libx264"
    keyint: int | None = None  # None: the encoder's default (250 for x264 and libvpx)
    audio: bool = False

    @property
    def suffix(self) -> str:
        return ".webm" if self.codec == "libvpx-vp9" else ".mp4"


def media_specs(ek_minutes: float) -> dict[str, Media]:
    return {
        "k400": Media("k400", 10, 30, 568, 320, keyint=90, audio=True),
        "ssv2": Media("ssv2", 4, 12, 427, 240, codec="libvpx-vp9"),
        "ek100": Media("ek100", ek_minutes * 60, 50, 456, 256, audio=True),
        "1080p": Media("1080p", 10, 30, 1920, 1080),
    }


def write_media(spec: Media, folder: Path) -> Path:
    """A video with texture and motion (a noise texture panned diagonally, a block that changes every frame)."""
    path = folder / f"{spec.name}_{spec.seconds:g}s{spec.suffix}"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    w, h = spec.width, spec.height
    texture = np.kron(rng.integers(0, 256, (h // 4 + 64, w // 4 + 64, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    options = (
        {"preset": "veryfast", "crf": "23"}
        if spec.codec == "libx264"
        else {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
    )
    if spec.keyint:
        options["g"] = str(spec.keyint)
    tmp = path.with_suffix(".part" + spec.suffix)
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream(spec.codec, rate=spec.fps, options=options)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = None
        if spec.audio:
            aus = out.add_stream("aac", rate=48000)
            aus.layout = "stereo"
        sent = 0
        for i in range(int(spec.seconds * spec.fps)):
            dy, dx = (i * 2) % 256, (i * 3) % 256
            img = np.ascontiguousarray(texture[dy : dy + h, dx : dx + w])
            img[: h // 4, : w // 4] = (i * 37) % 256
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, spec.fps)
            out.mux(vs.encode(frame))
            while aus is not None and sent < (i + 1) / spec.fps * 48000:
                t = (sent + np.arange(1024)) / 48000
                wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, sent, Fraction(1, 48000)
                out.mux(aus.encode(af))
                sent += 1024
        out.mux(vs.encode(None))
        if aus is not None:
            out.mux(aus.encode(None))
    tmp.rename(path)
    return path


# ---------------------------------------------------------------------------------------------- patterns


def _segment(first: int, count: int, frames: int) -> list[int]:
    """TSN-style: the middle frame of each of ``frames`` equal parts of ``[first, first + count)``."""
    return [first + int((k + 0.5) * count / frames) for k in range(frames)]


def _dense(start: int, frames: int = 16, stride: int = 4) -> list[int]:
    return [start + k * stride for k in range(frames)]


def patterns(num_frames: dict[str, int], fps: dict[str, float], clips: int, seed: int = 0) -> dict:
    """Pattern name → (media name, list of index lists, one per clip)."""
    rng = np.random.default_rng(seed)
    out = {}
    n, m = num_frames["k400"], num_frames["ssv2"]
    out["K400 segment 16 over the clip"] = ("k400", [_segment(0, n, 16) for _ in range(clips)])
    out["SSV2 segment 16 over the clip"] = ("ssv2", [_segment(0, m, 16) for _ in range(clips)])
    out["K400 dense 16x4"] = ("k400", [_dense(int(rng.integers(0, n - 61))) for _ in range(clips)])
    for views in (2, 5):
        starts = np.linspace(0, n - 61, views).round().astype(int)
        out[f"K400 test {views} clips (one read)"] = (
            "k400",
            [sorted({i for s in starts for i in _dense(int(s))})] * clips,
        )
    e, rate = num_frames["ek100"], fps["ek100"]
    for where, (lo, hi) in {
        "uniform": (0.0, 1.0),
        "early": (0.0, 0.2),
        "middle": (0.4, 0.6),
        "late": (0.8, 1.0),
    }.items():
        lists = []
        for _ in range(clips):
            count = int(rng.uniform(2, 5) * rate)
            first = int(rng.uniform(lo, hi) * (e - count))
            lists.append(_segment(first, count, 16))
        out[f"EK100 16 in a 2-5 s segment, {where}"] = ("ek100", lists)
    f = num_frames["1080p"]
    out["1080p dense 16x4"] = ("1080p", [_dense(int(rng.integers(0, f - 61))) for _ in range(clips)])
    return out


# ---------------------------------------------------------------------------------------------- decoders


def decoders(baseline: str | None = None) -> dict[str, Callable[[str, list[int]], np.ndarray]]:
    """Name → ``fn(path, indices) -> (T, H, W, 3) uint8``, for ca2st and every peer importable here."""
    out: dict[str, Callable] = {
        "ca2st": lambda p, idx: read_frames(p, idx, threads=1).numpy(),
    }
    if baseline:
        old = _load_baseline(baseline)
        out["ca2st (baseline)"] = lambda p, idx: old.read_frames(p, idx, threads=1).numpy()
    out["pyav sequential"] = _pyav_sequential
    try:
        import decord

        def _decord(p, idx):
            return decord.VideoReader(p, ctx=decord.cpu(0), num_threads=1).get_batch(idx).asnumpy()

        out["decord"] = _decord
    except ImportError:
        pass
    try:
        from torchcodec.decoders import VideoDecoder

        for mode in ("exact", "approximate"):

            def _torchcodec(p, idx, mode=mode):
                d = VideoDecoder(p, seek_mode=mode, num_ffmpeg_threads=1, dimension_order="NHWC")
                return d.get_frames_at(idx).data.numpy()

            out[f"torchcodec {mode}"] = _torchcodec
    except Exception:  # not installed, or its FFmpeg libraries are missing  # noqa: BLE001
        pass
    return out


def index_build_ms(path: str, repeats: int = 3) -> float:
    """CPU ms to build ca2st's frame index of ``path`` (paid once per file and process, or once with a disk
    cache): the best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        frame_index.build_index(path)
        best = min(best, time.process_time() - t0)
    return 1000 * best


def _pyav_sequential(path: str, idx: list[int]) -> np.ndarray:
    """What a plain PyAV loader does: decode from the start, convert the wanted frames."""
    wanted, last, got = set(idx), max(idx), {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return np.stack([got[i] for i in idx])


def _load_baseline(file: str):
    """A ``decode.py`` from another version of ca2st (e.g. ``git show main:src/ca2st/data/decode.py``), loaded as
    a module of this ``ca2st.data`` package."""
    spec = importlib.util.spec_from_file_location("ca2st.data.decode_baseline", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------- timing


def exactness(frames: np.ndarray, idx: list[int], reference: dict[int, np.ndarray]) -> bool:
    for frame, i in zip(frames, idx):
        mad = {
            j: float(np.abs(frame.astype(np.int16) - reference[j]).mean()) for j in (i - 1, i, i + 1) if j in reference
        }
        if mad[i] > EXACT_MAD or min(mad, key=mad.get) != i:
            return False
    return True


def compare(folder: Path, ek_minutes: float, clips: int, rounds: int, baseline: str | None, log=print) -> list[dict]:
    specs = media_specs(ek_minutes)
    paths = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        paths[name] = str(write_media(spec, folder))
        log(
            f"media {name}: {spec.width}x{spec.height} {spec.fps} fps {spec.seconds:g} s {spec.codec}"
            f"{' + AAC' if spec.audio else ''} ({time.perf_counter() - t0:.0f} s to write or find)"
        )
    info = {name: probe(p) for name, p in paths.items()}
    for name, p in paths.items():
        log(f"ca2st frame index of {name} ({info[name].num_frames} frames): {index_build_ms(p):.1f} ms CPU to build")
    pats = patterns({k: v.num_frames for k, v in info.items()}, {k: v.fps for k, v in info.items()}, clips)
    decs = decoders(baseline)
    log(f"decoders: {', '.join(decs)}; one thread each; {clips} clips x {rounds} rounds per pattern")
    rows = []
    for pname, (media, lists) in pats.items():
        path = paths[media]
        need = sorted({j for idx in lists for i in idx for j in (i - 1, i, i + 1) if 0 <= j < info[media].num_frames})
        reference = dict(zip(need, read_frames(path, need, method="sequential").numpy().astype(np.int16)))
        for d, fn in list(decs.items()):  # warm-up: libraries loaded, the file in the page cache, indexes built
            try:
                fn(path, lists[0])
            except Exception as e:  # noqa: BLE001 - a peer that cannot run here is left out, saying why
                log(f"{d} left out: {str(e).splitlines()[0]}")
                del decs[d]
        cpu = {d: 0.0 for d in decs}
        exact = {d: True for d in decs}
        order = list(decs)
        for r in range(rounds):
            for k, idx in enumerate(lists):
                shift = (r * len(lists) + k) % len(order)
                for d in order[shift:] + order[:shift]:
                    t0 = time.process_time()
                    frames = decs[d](path, idx)
                    cpu[d] += time.process_time() - t0
                    if r == 0:
                        exact[d] = exact[d] and exactness(frames, idx, reference)
        calls = rounds * len(lists)
        ms = {d: 1000 * cpu[d] / calls for d in decs}
        peers = [d for d in decs if not d.startswith("ca2st") and exact[d]]
        best = min(peers, key=ms.get) if peers else None
        rows.append(dict(pattern=pname, ms=ms, exact=exact, best=best))
        log(format_row(rows[-1]))
    return rows


def format_row(row: dict) -> str:
    best = row["best"]
    parts = []
    for d, ms in row["ms"].items():
        ratio = f" {ms / row['ms'][best]:.2f}x" if best else ""
        parts.append(f"{d} {ms:.1f} ms{ratio}{'' if row['exact'][d] else ' NOT EXACT'}")
    return f"{row['pattern']}: " + "; ".join(parts) + (f" (best exact peer: {best})" if best else "")


def markdown(rows: list[dict]) -> str:
    names = list(rows[0]["ms"])
    lines = [
        "| pattern | " + " | ".join(names) + " | best exact peer | ca2st / best | ca2st cores for 100 clips/s |",
        "|---" * (len(names) + 4) + "|",
    ]
    for row in rows:
        cells = [f"{row['ms'][d]:.1f}{'' if row['exact'][d] else ' (not exact)'}" for d in names]
        best = row["best"]
        ratio = f"{row['ms']['ca2st'] / row['ms'][best]:.2f}" if best else "-"
        cores = row["ms"]["ca2st"] * 100 / 1000  # decoding alone, one thread per clip
        lines.append(f"| {row['pattern']} | " + " | ".join(cells) + f" | {best or '-'} | {ratio} | {cores:.1f} |")
    return "\n".join(lines)
