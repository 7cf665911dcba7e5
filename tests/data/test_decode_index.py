"""Frame-exact indexed decoding on hard streams (B-frames, long and open GOPs, edit lists, variable frame rate,
VP9, HEVC), the seek plan, decoder threads per DataLoader worker, and the frame index's caches."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from odd_media import stream_copy_cut
from torch.utils.data import DataLoader, Dataset

import ca2st
import ca2st.data.decode as decode
import ca2st.data.frame_index as frame_index_module
from ca2st.data.decode import decoder_threads, probe, read_frames
from ca2st.data.frame_index import AUTO_FOLDER, FrameIndex, cached_index, clear_memory_cache
from media import frame_index, make_video

LONG = 400  # frames of the long-GOP files: keyframes at 0 and 250 (x264/libvpx keyint 250), maybe scene cuts
VFR_MS = np.cumsum(np.random.default_rng(0).integers(20, 70, 120)).tolist()  # 120 frames 20-69 ms apart

STREAMS = {  # name: (kind, frames, extra encoder options, frame times in ms or None)
    "h264-bframes3-gop250": ("mp4", LONG, {"g": "250", "bf": "3"}, None),
    "h264-open-gop-mkv": ("mkv", 200, {"g": "30", "bf": "3", "x264-params": "open-gop=1"}, None),
    "vp9-webm-gop250": ("webm-vp9", LONG, {"g": "250"}, None),
    "h264-vfr-mp4": ("mp4", len(VFR_MS), {"g": "30", "bf": "3"}, VFR_MS),
    "vp9-vfr-webm": ("webm-vp9", len(VFR_MS), {"g": "30"}, VFR_MS),
    "hevc-bframes-mp4": ("mp4-hevc", 200, {}, None),
}


@pytest.fixture(scope="module")
def streams(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    d = tmp_path_factory.mktemp("indexed")
    out = {}
    for name, (kind, n, options, times) in STREAMS.items():
        suffix = {"webm-vp9": ".webm", "mkv": ".mkv"}.get(kind, ".mp4")
        out[name] = (make_video(d / f"{name}{suffix}", kind, n, options=options, times_ms=times), n)
    src, _ = out["h264-bframes3-gop250"]
    out["h264-edit-list"] = (stream_copy_cut(src, d / "cut.mp4", cut=40), LONG - 40)  # keyframe 0 is hidden
    return out


def _indices(frames: torch.Tensor) -> list[int]:
    return [frame_index(f.numpy()) for f in frames]


def _index_sets(n: int) -> dict[str, list[int]]:
    """Frame numbers to ask for in a stream of ``n`` frames."""
    return {
        "first_last": [0, n - 1],
        "late_dense": list(range(n - 40, n - 8, 2)),
        "unsorted_repeated": [n - 3, 5, 5, n // 2, 0, n - 3],
        "uniform16": np.linspace(0, n - 1, 16).round().astype(int).tolist(),
        "around_keyframe": [248, 249, 250, 251] if n > 260 else [28, 29, 30, 31],
    }


@pytest.mark.parametrize("name", [*STREAMS, "h264-edit-list"])
@pytest.mark.parametrize("method", ["auto", "seek"])
def test_indexed_decoding_is_frame_exact(streams, name, method):
    path, n = streams[name]
    shift = 40 if name == "h264-edit-list" else 0
    assert probe(path).num_frames == n
    for label, idx in _index_sets(n).items():
        frames = read_frames(path, idx, method=method)
        assert _indices(frames) == [i + shift for i in idx], (name, method, label)
        assert torch.equal(frames, read_frames(path, idx, method="sequential")), (name, method, label)


def test_late_segment_seeks_past_the_long_gop(streams, caplog):
    path, n = streams["h264-bframes3-gop250"]
    with caplog.at_level(logging.DEBUG, logger="ca2st.data.decode"):
        frames = read_frames(path, list(range(300, 332, 2)))
    assert _indices(frames) == list(range(300, 332, 2))
    assert any("by 1 seeks" in r.getMessage() for r in caplog.records)


def test_plan_seeks_only_when_skipping_costs_more_than_the_seek():
    index = FrameIndex(np.arange(0, 1000, 10, dtype=np.int64), np.array([0, 500, 800]), None)  # keyframes 0, 50, 80
    assert decode._plan(index, [3, 10], seek_cost=5) == [(None, 0, 10)]  # from the start, no seek
    assert decode._plan(index, [3, 60], seek_cost=5) == [(None, 0, 3), (500, 50, 60)]  # skips frames 4..49
    assert decode._plan(index, [3, 60], seek_cost=50) == [(None, 0, 60)]  # a seek dearer than 46 frames
    assert decode._plan(index, [55, 60, 85], seek_cost=5) == [(500, 50, 60), (800, 80, 85)]
    assert decode._plan(index, [55, 79, 85], seek_cost=5) == [(500, 50, 85)]  # 85 follows 79 within its GOP


def test_wrong_index_falls_back_to_sequential(streams, monkeypatch, caplog):
    """An index shifted by one frame (the AVI failure mode) never yields a wrong frame."""
    path, n = streams["h264-bframes3-gop250"]
    real = cached_index(path)
    step = int(real.pts[1] - real.pts[0])
    shifted = FrameIndex(real.pts + step, real.key_pts + step, real.time_base)
    monkeypatch.setattr(decode, "cached_index", lambda *args, **kwargs: shifted)
    with caplog.at_level(logging.DEBUG, logger="ca2st.data.decode"):
        frames = read_frames(path, [300, 5, 260], method="seek")
        late = read_frames(path, [300, 260], method="seek")  # every run seeks: none starts at the file's start
    assert _indices(frames) == [300, 5, 260] and _indices(late) == [300, 260]
    assert any("decoding sequentially" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ threads


class _ThreadsInWorker(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return decoder_threads()


def test_one_decoder_thread_per_dataloader_worker():
    assert decoder_threads() == 0 and decoder_threads(3) == 3  # the main process: FFmpeg's choice
    assert list(DataLoader(_ThreadsInWorker(), batch_size=None, num_workers=1)) == [1]


class _FramesInWorker(Dataset):
    def __init__(self, path):
        self.path = path

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return read_frames(self.path, [i, 150 + i], threads=0)  # the parent's setting


def test_workers_decode_after_the_parent_did(streams):
    """A worker forked after the parent converted frames (with a threaded scaler) gets its own scaler: the
    parent's scaler threads do not exist in the worker, and using its scaler there hung."""
    path, _ = streams["h264-bframes3-gop250"]
    in_parent = read_frames(path, [0, 150, 1, 151], threads=0)
    loader = DataLoader(_FramesInWorker(path), batch_size=None, num_workers=1, timeout=60)
    in_worker = torch.cat(list(loader))
    assert torch.equal(in_worker, in_parent) and _indices(in_worker) == [0, 150, 1, 151]


# ------------------------------------------------------------------------------------------ caches


def _index_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npz"))


def test_disk_cache_is_written_reused_and_rebuilt_when_stale_or_broken(streams, tmp_path, monkeypatch):
    path, n = streams["vp9-vfr-webm"]
    video = tmp_path / "video.webm"
    video.write_bytes(path.read_bytes())
    cache = tmp_path / "index"
    clear_memory_cache()
    first = cached_index(str(video), cache)
    (stored,) = _index_files(cache)
    assert stored.name.startswith("video.webm.") and first.num_frames == n

    builds = []
    real_build = frame_index_module.build_index
    monkeypatch.setattr(frame_index_module, "build_index", lambda p: builds.append(p) or real_build(p))
    clear_memory_cache()
    again = cached_index(str(video), cache)  # another process: read from disk, not rebuilt
    assert builds == [] and np.array_equal(again.pts, first.pts) and np.array_equal(again.key_pts, first.key_pts)
    assert cached_index(str(video), cache) is again  # then from memory

    clear_memory_cache()
    stored.write_bytes(b"not an index")  # a torn or foreign file
    assert np.array_equal(cached_index(str(video), cache).pts, first.pts) and len(builds) == 1
    assert _index_files(cache) == [stored] and stored.read_bytes()[:2] == b"PK"  # rewritten

    clear_memory_cache()
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))  # a new version of the video
    cached_index(str(video), cache)
    assert len(builds) == 2
    assert not list(cache.glob(".tmp-*"))  # atomic writes leave no temporaries


def test_unwritable_cache_folder_keeps_the_index_in_memory(streams, tmp_path, caplog):
    path, n = streams["h264-vfr-mp4"]
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    clear_memory_cache()
    with caplog.at_level(logging.WARNING, logger="ca2st.data.frame_index"):
        frames = read_frames(path, [n - 1, 3], index_cache=blocker / "index")
    assert _indices(frames) == [n - 1, 3]
    assert any("not writable" in r.getMessage() for r in caplog.records)


def test_read_frames_and_probe_share_the_index(streams, tmp_path, monkeypatch):
    path, n = streams["vp9-webm-gop250"]
    cache = tmp_path / "shared"
    clear_memory_cache()
    decode._PROBE_CACHE.clear()
    builds = []
    real_build = frame_index_module.build_index
    monkeypatch.setattr(frame_index_module, "build_index", lambda p: builds.append(p) or real_build(p))
    assert probe(path, index_cache=cache).num_frames == n  # Matroska declares no count: the index counts
    assert _indices(read_frames(path, [n - 2, 1], index_cache=cache)) == [n - 2, 1]
    assert len(builds) == 1 and len(_index_files(cache)) == 1


def test_datasets_keep_indexes_beside_the_annotation_file_by_default(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "lists").mkdir()
    make_video(tmp_path / "videos" / "a.webm", "webm-vp9", 30)  # WebM: probing and reading both use the index
    listing = tmp_path / "lists" / "train.csv"
    listing.write_text("a.webm 3\n")
    overrides = {"data.train": str(listing), "data.root": str(tmp_path / "videos"), "model.num_frames": 4}
    clear_memory_cache()
    decode._PROBE_CACHE.clear()
    assert ca2st.build_dataset("cast_ssv2", "train", overrides)[0][0].shape[1] == 4
    assert len(_index_files(listing.parent / AUTO_FOLDER)) == 1
    clear_memory_cache()
    decode._PROBE_CACHE.clear()
    off = ca2st.build_dataset("cast_ssv2", "train", {**overrides, "data.index_cache": None})
    assert off.index_cache is None
    chosen = ca2st.build_dataset("cast_ssv2", "train", {**overrides, "data.index_cache": str(tmp_path / "idx")})
    chosen[0]
    assert len(_index_files(tmp_path / "idx")) == 1


def test_memory_cache_drops_the_least_recently_used_index_beyond_its_budget(streams, monkeypatch):
    a, b = str(streams["h264-vfr-mp4"][0]), str(streams["vp9-vfr-webm"][0])
    builds = []
    real_build = frame_index_module.build_index
    monkeypatch.setattr(frame_index_module, "build_index", lambda p: builds.append(p) or real_build(p))
    clear_memory_cache()
    one = cached_index(a).nbytes
    monkeypatch.setattr(frame_index_module, "MEMORY_BUDGET", one + 1)  # room for one index
    cached_index(a)
    cached_index(b)  # a is dropped
    cached_index(b)
    cached_index(a)
    assert builds == [a, b, a]


def test_disk_cache_names_stay_short_for_long_video_names(streams, tmp_path):
    path, _ = streams["h264-vfr-mp4"]
    video = tmp_path / ("v" * 236 + ".mp4")  # a legal name; with the cache's suffix it would pass 255 bytes
    video.write_bytes(path.read_bytes())
    clear_memory_cache()
    cached_index(str(video), tmp_path / "index")
    (stored,) = _index_files(tmp_path / "index")
    assert len(stored.name) < 255
