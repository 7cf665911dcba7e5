"""Display-matrix rotation (phone videos): read, applied by default, and optional."""

import numpy as np
import pytest
from odd_media import rotated_video

from ca2st.data.decode import display_rotation, read_frames
from media import HEIGHT, WIDTH, frame_index

NUM_FRAMES = 30


@pytest.mark.parametrize("degrees, turns", [(90, 1), (-90, 3), (180, 2), (0, 0)])
def test_frames_come_out_upright(tmp_path, degrees, turns):
    path = rotated_video(tmp_path / f"phone{degrees}.mp4", degrees, NUM_FRAMES)
    assert display_rotation(path) == (degrees % 360)
    idx = [0, 7, 29]
    for method in ("sequential", "seek"):
        upright = read_frames(path, idx, method=method).numpy()
        stored = read_frames(path, idx, method=method, autorotate=False).numpy()
        assert stored.shape == (3, HEIGHT, WIDTH, 3)
        assert np.array_equal(upright, np.rot90(stored, turns, axes=(1, 2)))  # counter-clockwise, as displayed
        assert [frame_index(f) for f in np.rot90(upright, -turns, axes=(1, 2))] == idx
