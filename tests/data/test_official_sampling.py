"""The official CAST loaders' sampling: every test view of ../shared/fixtures/official_test_views.json (videos of 1
to 901 frames) and hand-computed training cases from reference_code_spec.md §3.2."""

import json

import numpy as np
import pytest
import torch

from ca2st.data.official_sampling import (
    OfficialDenseSampler,
    OfficialSegmentSampler,
    official_dense_indices,
    official_segment_indices,
)
from ca2st.errors import ConfigError


def test_every_official_test_view_of_the_fixture(fixtures_dir):
    data = json.loads((fixtures_dir / "official_test_views.json").read_text())["views"]
    checked = 0
    for style, by_length in data.items():
        for frames, views in by_length.items():
            if style == "k400":
                ours = official_dense_indices(int(frames), 16, 4, num_clips=len(views))
            else:
                ours = official_segment_indices(int(frames), 16, num_clips=len(views))
            assert ours == views, (style, frames)
            checked += 1
    assert checked == 75


@pytest.mark.parametrize(
    "frames, starts, centres",
    [
        (200, [0, 12, 25, 37, 50, 62, 75, 87, 100, 112, 125, 137, 150, 162, 175, 187], None),
        (32, list(range(0, 32, 2)), list(range(1, 32, 2))),
        (16, list(range(16)), list(range(16))),
        (1, [0] * 16, [0] * 16),
    ],
)
def test_segment_test_views_are_starts_and_centres(frames, starts, centres):
    view0, view1 = official_segment_indices(frames, 16, num_clips=2)
    assert view0 == starts
    tick = frames / 16
    expected = centres if centres is not None else [int(tick / 2 + tick * k) for k in range(16)]
    assert view1 == expected


def test_segment_training_never_samples_the_tail_and_repeats_frame_zero_for_short_clips():
    g = torch.Generator().manual_seed(0)
    for frames in (16, 17, 40, 200, 301):
        seg = frames // 16
        for _ in range(20):
            (idx,) = official_segment_indices(frames, 16, train=True, generator=g)
            assert all(k * seg <= i < (k + 1) * seg for k, i in enumerate(idx))
            assert max(idx) < 16 * seg  # the last frames % 16 are never sampled
    assert official_segment_indices(15, 16, train=True, generator=g) == [[0] * 16]
    with pytest.raises(ConfigError, match="1 or 2 test views"):
        official_segment_indices(100, 16, num_clips=3)


def test_dense_test_views_every_fourth_frame_and_short_clips():
    assert official_dense_indices(100, 16, 4, num_clips=5)[4] == list(range(36, 100, 4))  # start int(4·9/4) = 9
    assert official_dense_indices(40, 16, 4, num_clips=5) == [list(range(0, 40, 4)) + [36] * 6] * 5  # padded
    assert official_dense_indices(65, 16, 4, num_clips=5)[4] == list(range(4, 68, 4))
    assert official_dense_indices(100, 16, 4, num_clips=1) == [list(range(16, 80, 4))]  # one view: centred


def test_dense_training_takes_linspace_points_of_a_64_frame_window():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        (idx,) = official_dense_indices(300, 16, 4, train=True, generator=g)
        end = idx[0] + 64
        assert 64 <= end < 300
        assert idx == np.linspace(end - 64, end, 16).astype(int).clip(max=end - 1).tolist()
        assert {b - a for a, b in zip(idx, idx[1:])} <= {4, 5} and max(idx) < end  # steps 4–5, never the end
    assert official_dense_indices(40, 16, 4, train=True) == [[0, 4, 8, 13, 17, 22, 26, 31, 35, 39] + [39] * 6]
    assert official_dense_indices(3, 16, 4, train=True) == [[2] * 16]


def test_samplers_make_clips_with_times_and_windows():
    (c0, c1) = OfficialSegmentSampler(16, 2)(200, 50.0, first=10)
    assert c0.indices[:3] == (10, 22, 35) and c1.view == 1 and (c0.start, c0.end) == (0.2, 4.2)
    views = OfficialDenseSampler(16, 4, 5)(100, 25.0)
    assert len(views) == 5 and views[4].indices[0] == 36 and views[4].end == pytest.approx(97 / 25)
    assert c0.times[1] == pytest.approx(22 / 50)
