"""Display-matrix rotation (phone videos): read, applied by default, and optional."""

from fractions import Fraction

import av
import numpy as np
import pytest

from ca2st.data.decode import display_rotation, read_frames
from media import HEIGHT, WIDTH, frame_index, index_frame

NUM_FRAMES = 30


def rotated_video(path, degrees: int):
    """An index-spelling H.264 MP4 stored landscape whose display matrix turns it ``degrees`` counter-clockwise."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "8", "g": "12", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if degrees:
            stream.set_display_rotation(degrees)
        for i in range(NUM_FRAMES):
            frame = av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("degrees, turns", [(90, 1), (-90, 3), (180, 2), (0, 0)])
def test_frames_come_out_upright(tmp_path, degrees, turns):
    path = rotated_video(tmp_path / f"phone{degrees}.mp4", degrees)
    assert display_rotation(path) == (degrees % 360)
    idx = [0, 7, 29]
    for method in ("sequential", "seek"):
        upright = read_frames(path, idx, method=method).numpy()
        stored = read_frames(path, idx, method=method, autorotate=False).numpy()
        assert stored.shape == (3, HEIGHT, WIDTH, 3)
        assert np.array_equal(upright, np.rot90(stored, turns, axes=(1, 2)))  # counter-clockwise, as displayed
        assert [frame_index(f) for f in np.rot90(upright, -turns, axes=(1, 2))] == idx
