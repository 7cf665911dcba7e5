"""Real-world oddities written in the tests: over-counting AVI headers, stream-copy cuts with an MP4 edit list,
phone videos with a display matrix."""

import struct
from fractions import Fraction
from pathlib import Path

import av

from media import HEIGHT, WIDTH, index_frame


def over_counting_avi(src: Path, dst: Path, extra: int = 1) -> Path:
    """A copy of the AVI ``src`` whose header (``avih.dwTotalFrames`` and the video ``strh.dwLength``) declares
    ``extra`` frames more than it holds, as XviD files of UCF-101 and HMDB often do."""
    data = bytearray(src.read_bytes())
    avih = data.find(b"avih")
    strh = data.find(b"strh")
    assert avih > 0 and data[strh + 8 : strh + 12] == b"vids"
    for offset in (avih + 8 + 16, strh + 8 + 32):  # dwTotalFrames, dwLength
        (frames,) = struct.unpack_from("<I", data, offset)
        struct.pack_into("<I", data, offset, frames + extra)
    dst.write_bytes(bytes(data))
    return dst


def stream_copy_cut(src: Path, dst: Path, cut: int, fps: int = 25) -> Path:
    """What ``ffmpeg -ss <cut> -i src -c copy dst`` writes: the packets from the keyframe before ``cut`` on, with
    timestamps shifted so that ``cut`` is time 0; the MP4 muxer writes an edit list hiding the frames before it."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        step = int(1 / (fps * ist.time_base))
        packets = [p for p in inp.demux(ist) if p.size]
        key = max(p.pts // step for p in packets if p.is_keyframe and p.pts // step <= cut)
        assert key < cut  # the cut is not on a keyframe: the edit list must hide frames
        for p in packets:
            if p.pts // step >= key:
                p.pts -= cut * step
                p.dts -= cut * step
                p.stream = ost
                out.mux(p)
    assert b"elst" in dst.read_bytes()
    return dst


def rotated_video(path, degrees: int, num_frames: int = 30):
    """An index-spelling H.264 MP4 stored landscape whose display matrix turns it ``degrees`` counter-clockwise."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "8", "g": "12", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if degrees:
            stream.set_display_rotation(degrees)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
