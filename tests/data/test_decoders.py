"""data/decoders.py: torchcodec gives PyAV's frames on every container and codec (the AVI it miscounts goes to
PyAV), rotated streams included; bad input is a DataError naming the file; the dataset reads with either."""

from pathlib import Path

import numpy as np
import pytest
import torch
from odd_media import rotated_video

import ca2st
from ca2st.data import decoders
from ca2st.data.decode import read_frames
from ca2st.data.decoders import frame_reader, read_frames_torchcodec, torchcodec_available
from ca2st.errors import ConfigError, DataError
from media import VIDEO_CODECS, frame_index, make_video, suffix

needs_torchcodec = pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or FFmpeg's libraries missing")
INDICES = [33, 0, 7, 59, 7, 58]  # unsorted, repeated, the last frame


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decoders")
    return {kind: make_video(folder / f"{kind}{suffix(kind)}", kind, 60) for kind in VIDEO_CODECS}


@needs_torchcodec
@pytest.mark.parametrize("kind", list(VIDEO_CODECS))
def test_torchcodec_gives_the_frames_pyav_gives(videos, kind):
    frames = read_frames_torchcodec(videos[kind], INDICES)
    assert [frame_index(f) for f in frames.numpy()] == INDICES
    assert torch.equal(frames, read_frames(videos[kind], INDICES))


@needs_torchcodec
@pytest.mark.parametrize("degrees", [90, 180, -90])
def test_torchcodec_turns_rotated_streams_upright_as_pyav_does(tmp_path, degrees):
    path = rotated_video(tmp_path / f"phone{degrees}.mp4", degrees, 20)
    assert torch.equal(read_frames_torchcodec(path, [0, 5, 19]), read_frames(path, [0, 5, 19]))


@needs_torchcodec
def test_torchcodec_errors_name_the_file(videos, tmp_path):
    with pytest.raises(DataError, match=r"mp4\.mp4: frame index 60 is out of range: the video has 60 frames"):
        read_frames_torchcodec(videos["mp4"], [3, 60])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="garbage.mp4: torchcodec cannot decode it"):
        read_frames_torchcodec(garbage, [0])
    with pytest.raises(DataError, match="no frame indices"):
        read_frames_torchcodec(videos["mp4"], [])


def test_choosing_a_decoder(monkeypatch):
    assert frame_reader("pyav").func is read_frames
    with pytest.raises(ConfigError, match=r"decoder must be one of \['pyav', 'torchcodec'\], got 'decord'"):
        frame_reader("decord")
    with pytest.raises(ConfigError, match="pyav decoder decodes on the CPU"):
        frame_reader("pyav", device="cuda")
    monkeypatch.setattr(decoders, "torchcodec_available", lambda: False)
    with pytest.raises(ConfigError, match="decoder=torchcodec needs torchcodec and FFmpeg's shared libraries"):
        frame_reader("torchcodec")


@needs_torchcodec
def test_a_dataset_reads_the_same_items_with_either_decoder(synthetic_data, tmp_path):
    common = [*synthetic_data.overrides(), f"data.val={synthetic_data.files['val']}", f"output_dir={tmp_path}"]
    pyav = ca2st.build_dataset("smoke", "val", common)
    codec = ca2st.build_dataset("smoke", "val", [*common, "data.decoder=torchcodec"])
    for i in range(3):
        assert torch.equal(pyav[i][0], codec[i][0])
