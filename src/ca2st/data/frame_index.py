"""A video stream's frame index: what seeking needs to land on exact frames, built once per file and cached.

The index lists the presentation timestamp of every frame in presentation order (frame ``i`` has ``pts[i]``;
an MP4 edit list's hidden frames are left out, as :func:`ca2st.data.decode.read_frames` counts frames) and
the timestamp of every keyframe (hidden ones included: they are where decoding a cut file starts). It is
built by demuxing the video stream alone (the demuxer skips the other streams' packets without reading
them) and cached:

* in memory, per process, least recently used first out, keyed by path, size and modification time, up to
  :data:`MEMORY_BUDGET` bytes of timestamps;
* on disk when the caller names a folder: one small ``.npz`` file per video (named by the video's name and a
  hash of its absolute path), written atomically, holding the size and modification time of the video it
  was built from. A file that does not load, belongs to another video or another version of it, or holds
  an inconsistent index is rebuilt, never trusted. A folder that cannot be written is logged once and
  the index kept in memory only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "FrameIndex",
    "NotIndexable",
    "build_index",
    "demux_only",
    "cached_index",
    "cache_folder",
    "clear_memory_cache",
    "MEMORY_BUDGET",
    "AUTO_FOLDER",
]

AUTO_FOLDER = ".ca2st-index"  # the folder beside an annotation file that ``cache_folder("auto", ...)`` uses
FORMAT_VERSION = 1
MEMORY_BUDGET = 64 << 20  # bytes of timestamp arrays kept in memory per process
_MEMORY: OrderedDict[tuple, FrameIndex] = OrderedDict()
_UNWRITABLE: set[str] = set()  # cache folders already reported as unwritable


class NotIndexable(Exception):
    """The stream cannot be indexed (a packet without timestamp, repeated timestamps): decode sequentially."""


@dataclass(frozen=True, eq=False)
class FrameIndex:
    """Presentation timestamps ``pts`` (int64, ascending; frame ``i`` ↔ ``pts[i]``) and keyframe timestamps
    ``key_pts`` (int64, ascending) of a video stream, in units of ``time_base``."""

    pts: np.ndarray
    key_pts: np.ndarray
    time_base: Fraction

    @property
    def num_frames(self) -> int:
        return int(self.pts.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.pts.nbytes + self.key_pts.nbytes)

    def frame_of(self, pts: int | None) -> int | None:
        """The frame number whose timestamp is ``pts``; ``None`` for a timestamp that is no frame's."""
        if pts is None:
            return None
        i = int(np.searchsorted(self.pts, pts))
        return i if i < self.pts.shape[0] and int(self.pts[i]) == pts else None

    def keyframe_before(self, frame: int) -> tuple[int, int]:
        """For frame number ``frame``: the timestamp of the last keyframe at or before it and the first frame
        that decoding from that keyframe presents. Raises :class:`NotIndexable` when no keyframe precedes it."""
        k = int(np.searchsorted(self.key_pts, self.pts[frame], side="right")) - 1
        if k < 0:
            raise NotIndexable(f"no keyframe at or before frame {frame}")
        key = int(self.key_pts[k])
        return key, int(np.searchsorted(self.pts, key))

    def check(self) -> None:
        """Raise :class:`NotIndexable` unless the arrays form an index (strictly ascending, a keyframe first)."""
        if self.pts.ndim != 1 or self.key_pts.ndim != 1 or self.pts.shape[0] == 0 or self.key_pts.shape[0] == 0:
            raise NotIndexable("an empty index")
        if np.any(np.diff(self.pts) <= 0) or np.any(np.diff(self.key_pts) <= 0):
            raise NotIndexable("timestamps are not strictly ascending")
        if self.key_pts[0] > self.pts[0]:
            raise NotIndexable("the first frame comes before the first keyframe")


def demux_only(container, stream) -> None:
    """Let the demuxer of ``container`` skip the packets of every stream but ``stream`` without reading them."""
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all


def build_index(path: str) -> FrameIndex:
    """Index the first video stream of ``path`` by demuxing its packets to the end (the demuxer is told to discard
    the other streams). Raises :class:`NotIndexable` when the stream cannot be indexed."""
    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            demux_only(container, stream)
            pts, keys = [], []
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None:
                    raise NotIndexable("a video packet has no timestamp")
                if packet.is_keyframe:
                    keys.append(packet.pts)
                if not packet.is_discard:
                    pts.append(packet.pts)
            time_base = stream.time_base
    except av.error.FFmpegError as e:
        raise NotIndexable(f"demuxing failed ({e})") from e
    index = FrameIndex(np.sort(np.array(pts, dtype=np.int64)), np.sort(np.array(keys, dtype=np.int64)), time_base)
    index.check()
    return index


def cached_index(path: str, cache_dir: str | os.PathLike | None = None) -> FrameIndex:
    """The frame index of the first video stream of ``path``: from memory, else from ``cache_dir`` (when given
    and valid), else built (and then stored in both). Raises :class:`NotIndexable` when the stream cannot be
    indexed."""
    stat = os.stat(path)
    full = os.path.abspath(path)
    key = (full, stat.st_size, stat.st_mtime_ns)
    index = _MEMORY.get(key)
    if index is not None:
        try:
            _MEMORY.move_to_end(key)
        except KeyError:  # evicted meanwhile by another thread
            pass
        return index
    disk = _disk_path(full, cache_dir) if cache_dir is not None else None
    index = _load(disk, stat) if disk is not None else None
    if index is None:
        index = build_index(path)
        if disk is not None:
            _store(disk, index, stat)
    _remember(key, index)
    return index


def cache_folder(setting: str | os.PathLike | None, annotation_file: str | os.PathLike | None = None) -> Path | None:
    """The disk cache folder for a dataset's setting: ``None`` or ``"off"``: none (memory only); ``"auto"``:
    :data:`AUTO_FOLDER` beside ``annotation_file``, if that folder can be created and written (else none, logged);
    anything else: that folder."""
    if setting is None or str(setting) == "off":
        return None
    if str(setting) != "auto":
        return Path(setting)
    if not annotation_file:
        return None
    folder = Path(annotation_file).resolve().parent / AUTO_FOLDER
    try:
        folder.mkdir(exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        logger.info("%s cannot be written: frame indexes are kept in memory only", folder)
        return None
    return folder


def clear_memory_cache() -> None:
    """Forget every index held in memory (the disk cache is untouched)."""
    _MEMORY.clear()


def _remember(key: tuple, index: FrameIndex) -> None:
    _MEMORY[key] = index
    total = sum(i.nbytes for i in _MEMORY.values())
    while total > MEMORY_BUDGET and len(_MEMORY) > 1:
        _, old = _MEMORY.popitem(last=False)
        total -= old.nbytes


def _disk_path(full: str, cache_dir) -> Path:
    digest = hashlib.sha1(full.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(cache_dir) / f"{Path(full).name[:100]}.{digest}.npz"  # short enough for any file system


def _load(disk: Path, stat: os.stat_result) -> FrameIndex | None:
    """The index stored at ``disk`` if it is readable and was built from this version of the video."""
    if not disk.is_file():
        return None
    try:
        with np.load(disk, allow_pickle=False) as data:
            header = data["header"]
            if header.shape != (5,) or int(header[0]) != FORMAT_VERSION:
                raise ValueError("another format version")
            if (int(header[1]), int(header[2])) != (stat.st_size, stat.st_mtime_ns):
                logger.debug("%s: stale frame index (the video changed); rebuilding it", disk)
                return None
            index = FrameIndex(
                data["pts"].astype(np.int64), data["key_pts"].astype(np.int64), Fraction(int(header[3]), int(header[4]))
            )
        index.check()
        return index
    except Exception as e:  # a torn, foreign or corrupt file: rebuilt, never trusted
        logger.debug("%s: unreadable frame index (%s); rebuilding it", disk, e)
        return None


def _store(disk: Path, index: FrameIndex, stat: os.stat_result) -> None:
    """Write ``index`` to ``disk`` atomically (a temporary file in the same folder, then a rename)."""
    folder = disk.parent
    header = np.array(
        [FORMAT_VERSION, stat.st_size, stat.st_mtime_ns, index.time_base.numerator, index.time_base.denominator],
        dtype=np.int64,
    )
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-", suffix=".npz", delete=False) as f:
            tmp = f.name
            np.savez(f, header=header, pts=index.pts, key_pts=index.key_pts)
        os.replace(tmp, disk)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if str(folder) not in _UNWRITABLE:
            _UNWRITABLE.add(str(folder))
            logger.warning("frame-index cache %s is not writable (%s); indexes stay in memory only", folder, e)
