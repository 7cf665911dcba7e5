"""Small media files for the dataset tests, written with PyAV (importable as ``dataset_media``)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def frame_pattern(i: int, height: int, width: int) -> np.ndarray:
    """An RGB frame whose mean grey level encodes ``i`` (steps of 8 survive H.264 at high quality)."""
    img = np.full((height, width, 3), (8 * i) % 256, dtype=np.uint8)
    img[: height // 4, : width // 4] = (37 * i) % 256  # texture so the encoder does not collapse
    return img


def make_video(
    path: str | Path,
    num_frames: int = 32,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    *,
    audio: bool = True,
    sample_rate: int = 16000,
    codec: str = "libx264",
    tone_hz: float = 440.0,
) -> Path:
    """An H.264 mp4 (``yuv420p``) of ``num_frames`` frames and, with ``audio``, a mono AAC sine track."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "10", "preset": "ultrafast"} if codec == "libx264" else {}
        as_ = None
        if audio:
            as_ = out.add_stream("aac", rate=sample_rate)
            as_.layout = "mono"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, height, width), format="rgb24")
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if as_ is not None:
            total = int(num_frames / fps * sample_rate)
            t = np.arange(total) / sample_rate
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            chunk = 1024
            for k in range(0, total, chunk):
                part = wave[k : k + chunk]
                af = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
                af.sample_rate = sample_rate
                af.pts = k
                for packet in as_.encode(af):
                    out.mux(packet)
            for packet in as_.encode():
                out.mux(packet)
    return path


def write(path: str | Path, text: str) -> Path:
    """Write an annotation file (parents created) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
