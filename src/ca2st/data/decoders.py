"""The frame decoders a dataset can read with: ``pyav`` (:func:`ca2st.data.decode.read_frames`, the default and the
reference) or ``torchcodec`` (optional: ``pip install torchcodec`` and the FFmpeg libraries it loads).

Both return the frames at 0-based indices as uint8 RGB ``(T, H, W, 3)``, frame ``i`` meaning what it means in
:mod:`ca2st.data.decode`. torchcodec decodes with ``seek_mode="exact"`` (it scans the file once per decoder to
index every frame) on one FFmpeg thread, on the CPU or, with ``device="cuda"``, on the GPU's NVDEC (whose colour
conversion is not bit-exact with the CPU's); it turns frames upright by the display matrix as PyAV does. Where
its frame numbering disagrees with a sequential decode (AVI, whose timestamps are synthetic: it returns frame
``i - 1``) the file goes to PyAV, so both decoders give the same frames.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable

import torch
from torch.utils.data import get_worker_info

from ..errors import ConfigError, DataError
from .decode import frame_numbers, read_frames

__all__ = ["DECODERS", "frame_reader", "read_frames_torchcodec", "torchcodec_available"]

DECODERS = ("pyav", "torchcodec")
_PYAV_ONLY_SUFFIXES = (".avi",)  # containers whose frame numbering torchcodec gets wrong


def torchcodec_available() -> bool:
    """Whether torchcodec is installed and loads (it needs FFmpeg's shared libraries)."""
    if importlib.util.find_spec("torchcodec") is None:
        return False
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def read_frames_torchcodec(path, indices, *, device: str = "cpu", threads: int | None = None) -> torch.Tensor:
    """Frames at 0-based ``indices`` decoded by torchcodec, as :func:`~ca2st.data.decode.read_frames` returns them
    (on ``device``); AVI files go to PyAV (see the module docstring). ``threads``: FFmpeg threads (``None``: one in
    a DataLoader worker, FFmpeg's choice elsewhere). Raises DataError naming the file for an unreadable file or an
    index out of range."""
    path = os.fspath(path)
    if threads is None:
        threads = 1 if get_worker_info() is not None else 0
    idx = frame_numbers(indices, path)
    if not idx:
        raise DataError(f"{path}: no frame indices requested")
    if path.lower().endswith(_PYAV_ONLY_SUFFIXES):
        return read_frames(path, idx, threads=threads).to(device)
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(
            path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=threads, device=device
        )
        count = decoder.metadata.num_frames
        bad = [i for i in idx if not 0 <= i < count]
        if bad:
            raise DataError(f"{path}: frame index {bad[0]} is out of range: the video has {count} frames (0-based)")
        return decoder.get_frames_at(indices=idx).data
    except DataError:
        raise
    except (RuntimeError, ValueError, IndexError) as err:
        raise DataError(f"{path}: torchcodec cannot decode it: {err}") from err


def frame_reader(
    decoder: str = "pyav", device: str = "cpu", index_cache: str | os.PathLike | None = None
) -> Callable[[str, list[int]], torch.Tensor]:
    """``read(path, indices) -> uint8 (T, H, W, 3)`` for the decoder named (picklable, for loader workers);
    PyAV keeps its frame indexes in ``index_cache`` (:func:`~ca2st.data.decode.read_frames`)."""
    if decoder not in DECODERS:
        raise ConfigError(f"decoder must be one of {list(DECODERS)}, got {decoder!r}")
    if decoder == "pyav":
        if device != "cpu":
            raise ConfigError("the pyav decoder decodes on the CPU: use decoder=torchcodec for device=cuda")
        return functools.partial(read_frames, index_cache=index_cache)
    if not torchcodec_available():
        raise ConfigError(
            "decoder=torchcodec needs torchcodec and FFmpeg's shared libraries: pip install torchcodec, and "
            "apt-get install libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavfilter8 "
            "libavdevice59 (Debian 12), or use decoder=pyav"
        )
    return functools.partial(read_frames_torchcodec, device=device)
