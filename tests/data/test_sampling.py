import pytest
import torch

from ca2st.data.official_sampling import OfficialDenseSampler, OfficialSegmentSampler
from ca2st.data.sampling import (
    DenseSampler,
    SegmentSampler,
    build_sampler,
    dense_indices,
    frame_range,
    segment_indices,
    view_grid,
)
from ca2st.errors import ConfigError, DataError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ segment sampling


def test_segment_test_indices_are_segment_centres():
    assert segment_indices(160, 16) == [5 + 10 * k for k in range(16)]
    assert segment_indices(32, 4, offset=0.0) == [0, 8, 16, 24]


def test_segment_train_one_frame_inside_each_segment():
    for seed in range(20):
        idx = segment_indices(100, 16, train=True, generator=gen(seed))
        assert len(idx) == 16
        for k, i in enumerate(idx):
            assert int(k * 100 / 16) <= i < (k + 1) * 100 / 16


def test_segment_train_is_deterministic_given_the_generator_and_random_otherwise():
    a = segment_indices(300, 16, train=True, generator=gen(3))
    b = segment_indices(300, 16, train=True, generator=gen(3))
    c = segment_indices(300, 16, train=True, generator=gen(4))
    assert a == b and a != c


def test_segment_short_video_repeats_frames_in_order():
    idx = segment_indices(5, 16)
    assert len(idx) == 16 and sorted(idx) == idx and set(idx) == {0, 1, 2, 3, 4}
    idx = segment_indices(1, 16, train=True, generator=gen())
    assert idx == [0] * 16


def test_segment_sampler_views_and_offset_range():
    s = SegmentSampler(16, num_clips=2, offsets=(0.0, 0.5))
    v0, v1 = s(160, 10.0, first=40)
    assert v0.indices == tuple(40 + 10 * k for k in range(16))
    assert v1.indices == tuple(45 + 10 * k for k in range(16))
    assert (v0.view, v1.view) == (0, 1)
    assert v0.start == pytest.approx(4.0) and v0.end == pytest.approx(20.0)
    assert v1.times[0] == pytest.approx(4.5)
    default = SegmentSampler(4, num_clips=2)
    assert default.offsets == (0.25, 0.75)
    with pytest.raises(ConfigError, match="offsets"):
        SegmentSampler(4, num_clips=2, offsets=(0.0,))


def test_segment_train_returns_one_clip():
    clips = SegmentSampler(8, num_clips=3)(80, 8.0, train=True, generator=gen())
    assert len(clips) == 1 and len(clips[0].indices) == 8


# ------------------------------------------------------------------ dense sampling


def test_dense_indices_stride_and_padding_rule():
    assert dense_indices(100, 4, 3, start=10) == [10, 13, 16, 19]
    assert dense_indices(20, 16, 4) == [0, 4, 8, 12, 16] + [19] * 11


def test_dense_train_start_is_uniform_inside_the_video():
    s = DenseSampler(16, 4)
    assert s.span == 61
    starts = set()
    for seed in range(50):
        (clip,) = s(100, 25.0, train=True, generator=gen(seed))
        i = clip.indices
        assert all(b - a == 4 for a, b in zip(i, i[1:])) and 0 <= i[0] and i[-1] < 100
        starts.add(i[0])
    assert len(starts) > 10 and max(starts) <= 39


def test_dense_test_clips_evenly_spaced_and_single_view_centred():
    s = DenseSampler(16, 4, num_clips=5)
    clips = s(301, 30.0, first=10)
    assert [c.indices[0] for c in clips] == [10, 70, 130, 190, 250]
    assert clips[-1].indices[-1] == 310
    assert clips[0].start == pytest.approx(10 / 30) and clips[0].end == pytest.approx(71 / 30)
    (c,) = DenseSampler(16, 4, num_clips=1)(101, 25.0)
    assert c.indices[0] == 20


def test_dense_short_video_pads_with_last_frame():
    (c,) = DenseSampler(8, 4)(10, 25.0, train=True, generator=gen())
    assert c.indices == (0, 4, 8, 9, 9, 9, 9, 9)
    clips = DenseSampler(8, 4, num_clips=3)(10, 25.0)
    assert all(cl.indices == (0, 4, 8, 9, 9, 9, 9, 9) for cl in clips)


def test_timestamps_are_index_over_fps():
    (c,) = DenseSampler(4, 2)(50, 10.0, first=7)
    assert c.times == tuple(i / 10.0 for i in c.indices)


def test_build_sampler_and_bad_configs():
    assert isinstance(build_sampler("segment", 8, mode="native"), SegmentSampler)
    assert isinstance(build_sampler("segment", 8), OfficialSegmentSampler)  # the official rules by default
    assert isinstance(build_sampler("dense", 8), OfficialDenseSampler)
    with pytest.raises(ConfigError, match="unknown input mode"):
        build_sampler("dense", 8, mode="paper")
    d = build_sampler("dense", 8, sampling_rate=2, num_clips=2, mode="native")
    assert (d.clip_len, d.sampling_rate, d.num_clips) == (8, 2, 2)
    with pytest.raises(ConfigError, match="unknown sampler"):
        build_sampler("random")
    with pytest.raises(ConfigError):
        DenseSampler(0)
    with pytest.raises(DataError, match="frame rate"):
        DenseSampler()(10, 0.0)
    with pytest.raises(DataError, match="empty frame range"):
        segment_indices(0)


# ------------------------------------------------------------------ segments in untrimmed videos


def test_frame_range_seconds_and_frames():
    assert frame_range(1000, 50.0, 1.0, 2.0) == (50, 50)
    assert frame_range(1000, 50.0, 1.01, 2.0) == (51, 49)
    assert frame_range(1000, 50.0) == (0, 1000)
    assert frame_range(1000, 50.0, 10, 20, unit="frames") == (10, 10)
    # an end a little past the video is cut to the last frame
    assert frame_range(100, 10.0, 9.5, 10.3) == (95, 5)
    # a segment shorter than one frame still gives one frame
    assert frame_range(100, 10.0, 1.01, 1.02) == (11, 1)


def test_frame_range_errors_name_the_file():
    with pytest.raises(DataError, match=r"v\.mp4: segment .* outside the video"):
        frame_range(100, 10.0, 12.0, 13.0, path="v.mp4")
    with pytest.raises(DataError, match="end is not after its start"):
        frame_range(100, 10.0, 3.0, 3.0, path="v.mp4")
    with pytest.raises(DataError, match="no frames"):
        frame_range(0, 10.0, path="v.mp4")
    with pytest.raises(ConfigError):
        frame_range(10, 10.0, unit="samples")


def test_view_grid_is_clip_major():
    assert view_grid(2, 3) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert len(view_grid(5, 3)) == 15


def test_time_intervals_pair_frames_into_tubelets_after_the_window():
    from ca2st.data.sampling import time_intervals

    times = torch.tensor([0.0, 0.1, 0.2, 0.3])
    out = time_intervals(times, torch.tensor([0.0, 4.0]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 4.0], [0.0, 0.1], [0.2, 0.3]]))
    batch = time_intervals(times.expand(6, 4), torch.zeros(6, 2))
    assert batch.shape == (6, 3, 2)
    with pytest.raises(ConfigError, match="even number"):
        time_intervals(torch.zeros(3), torch.zeros(2))


@pytest.mark.parametrize(
    "start, end, unit",
    [
        (float("inf"), None, "seconds"),
        (0.0, float("nan"), "seconds"),
        (0.0, 1e308, "seconds"),
        (float("inf"), None, "frames"),
    ],
)
def test_frame_range_of_a_non_finite_segment_is_a_data_error(start, end, unit):
    with pytest.raises(DataError, match=r"v\.mp4: segment .* is not a finite range of the video"):
        frame_range(1000, 50.0, start, end, unit=unit, path="v.mp4")
