"""Frame counts that never outrun what decodes: AVI headers that over-count, MP4 edit lists, the probe cache."""

import os

import av
import pytest
import torch
from odd_media import over_counting_avi, stream_copy_cut

import ca2st.data.decode as decode
from ca2st.data.datasets import Sample, VideoDataset
from ca2st.data.decode import probe, read_frames
from ca2st.data.sampling import build_sampler
from ca2st.errors import DataError
from media import frame_index, make_video

NUM_FRAMES = 150
CUT = 75  # the stream-copy cut point: the keyframe before it is frame 72 (GOP 12)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("counts")
    avi = make_video(d / "clip.avi", "avi", NUM_FRAMES)
    mp4 = make_video(d / "clip.mp4", "mp4", NUM_FRAMES)
    truncated = d / "truncated.avi"
    truncated.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    return {
        "avi": avi,
        "over": over_counting_avi(avi, d / "over.avi"),
        "over2": over_counting_avi(avi, d / "over2.avi", extra=2),
        "cut": stream_copy_cut(mp4, d / "cut.mp4", CUT),
        "truncated_avi": truncated,
    }


def _indices(frames: torch.Tensor) -> list[int]:
    return [frame_index(f.numpy()) for f in frames]


@pytest.mark.parametrize("name, extra", [("over", 1), ("over2", 2)])
def test_over_counting_avi_header(files, name, extra):
    info = probe(files[name])
    assert (info.num_frames, info.num_frames_source) == (NUM_FRAMES, "decoded")
    assert info.header_frames == NUM_FRAMES + extra
    for method in ("auto", "sequential", "seek"):
        assert _indices(read_frames(files[name], [0, NUM_FRAMES - 2, NUM_FRAMES - 1], method=method)) == [
            0,
            NUM_FRAMES - 2,
            NUM_FRAMES - 1,
        ]
    with pytest.raises(DataError, match=f"the video has {NUM_FRAMES} frames") as err:
        read_frames(files[name], [NUM_FRAMES])
    assert "truncated" not in str(err.value) and "end of the video" in str(err.value)


class RawFrames:
    """An evaluation transform that keeps the decoded pixels: (T, C, H, W) uint8 -> one view (1, T, H, W, C)."""

    num_crops = 1

    def __call__(self, video, generator=None):
        return video.permute(0, 2, 3, 1)[None]


def test_over_counting_avi_in_a_dataset(files):
    samples = [
        Sample("whole", "over.avi", 0),
        Sample("tail", "over.avi", 0, start=NUM_FRAMES - 4, end=NUM_FRAMES + 1, unit="frames"),
    ]
    ds = VideoDataset(samples, files["over"].parent, build_sampler("segment", 4), RawFrames())
    whole, tail = ds[0][0][0], ds[1][0][0]
    assert _indices(whole) == [0, 37, 75, 112]  # official view 0: starts of 4 parts of 150 frames (151: 113)
    assert _indices(tail) == list(range(NUM_FRAMES - 4, NUM_FRAMES))


def test_truncated_avi_is_still_reported(files):
    with pytest.raises(DataError, match=r"declares 150 frames but only \d+ decode: the file looks truncated"):
        probe(files["truncated_avi"])


def test_edit_list_mp4_starts_at_the_first_presented_frame(files):
    info = probe(files["cut"])
    assert (info.num_frames, info.num_frames_source) == (NUM_FRAMES - CUT, "packets")
    assert info.header_frames > info.num_frames  # the header counts the hidden frames too
    last = NUM_FRAMES - CUT - 1
    for method in ("auto", "sequential", "seek"):
        assert _indices(read_frames(files["cut"], [0, 1, 40, last], method=method)) == [CUT, CUT + 1, CUT + 40, 149]
    with pytest.raises(DataError, match=f"the video has {NUM_FRAMES - CUT} frames"):
        read_frames(files["cut"], [last + 1])


def test_clean_files_keep_their_counts(files):
    assert probe(files["avi"]).num_frames == NUM_FRAMES
    mp4 = probe(files["cut"].parent / "clip.mp4")
    assert (mp4.num_frames, mp4.num_frames_source, mp4.header_frames) == (NUM_FRAMES, "container", NUM_FRAMES)


def test_probe_is_cached_per_file_version(files, monkeypatch, tmp_path):
    calls = []
    real = decode._probe

    def counting(path, count, *rest):
        calls.append(path)
        return real(path, count, *rest)

    monkeypatch.setattr(decode, "_probe", counting)
    path = tmp_path / "v.avi"
    path.write_bytes(files["over"].read_bytes())
    assert probe(path).num_frames == NUM_FRAMES
    assert probe(path).num_frames == NUM_FRAMES
    assert len(calls) == 1
    path.write_bytes(files["avi"].read_bytes()[:-4] + b"JUNK")  # same size, new content
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    probe(path)
    assert len(calls) == 2


def test_mp4_packets_are_counted_from_the_index(files, monkeypatch):
    def no_demux(*args, **kwargs):
        raise AssertionError("an MP4 count must not read the media data")

    monkeypatch.setattr(av.container.InputContainer, "demux", no_demux)
    assert probe(files["cut"], count="packets").num_frames == NUM_FRAMES - CUT
    assert probe(files["cut"].parent / "clip.mp4", count="packets").num_frames == NUM_FRAMES
