"""Frame-exact decoding on every container/codec, audio windows, probing, and the bad-input messages."""

import logging
import math
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import ca2st.data.decode as decode
from ca2st.data.decode import has_audio, probe, read_audio, read_frames
from ca2st.data.frame_index import FrameIndex
from ca2st.errors import DataError
from media import (
    AUDIO_CODECS,
    HEIGHT,
    VIDEO_CODECS,
    WIDTH,
    bigbuckbunny,
    frame_index,
    make_audio_file,
    make_video,
    suffix,
    tone,
)

KINDS = list(VIDEO_CODECS)
SEEKABLE = ["mp4", "mkv", "mkv-mpeg4", "webm-vp9", "mp4-hevc"]  # AVI and VP8 WebM always decode sequentially
NUM_FRAMES = 150  # GOP 12: seeking pays off for sparse indices
AUDIO_SECONDS = NUM_FRAMES / 25
TONE = dict(freqs=[440.0, 1000.0], amps=[0.5, 0.2])  # left and right channels differ


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def videos(media_dir) -> dict:
    out = {}
    for kind in KINDS:
        audio = tone(TONE["freqs"], AUDIO_SECONDS, 48000, TONE["amps"])
        out[kind] = make_video(media_dir / f"clip_{kind}{suffix(kind)}", kind, NUM_FRAMES, audio=audio)
    return out


def _indices(frames: torch.Tensor) -> list[int]:
    return [frame_index(f.numpy()) for f in frames]


INDEX_SETS = {
    "sorted": [0, 1, 2, 30, 31, 75, 149],
    "unsorted_repeated": [120, 3, 3, 77, 0, 120, 64],
    "first_last": [0, 149],
    "single_last": [149],
    "sparse": [10, 70, 140],
    "uniform16": np.linspace(0, 149, 16).round().astype(int).tolist(),
}


# ------------------------------------------------------------------------------------------ frames


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["sequential", "auto", "seek"])
def test_read_frames_is_frame_exact(videos, kind, method):
    for name, idx in INDEX_SETS.items():
        frames = read_frames(videos[kind], idx, method=method)
        assert frames.shape == (len(idx), HEIGHT, WIDTH, 3) and frames.dtype == torch.uint8, name
        assert _indices(frames) == idx, (kind, method, name)


@pytest.mark.parametrize("kind", KINDS)
def test_seek_is_used_only_where_safe(videos, kind, caplog):
    with caplog.at_level(logging.DEBUG, logger="ca2st.data.decode"):
        frames = read_frames(videos[kind], [5, 140, 70], method="auto")
    assert _indices(frames) == [5, 140, 70]
    seeked = any("seeks" in r.getMessage() for r in caplog.records)
    assert seeked == (kind in SEEKABLE)


@pytest.mark.parametrize("kind", SEEKABLE)
def test_seek_equals_sequential_pixels(videos, kind):
    idx = [149, 13, 100, 13, 55]
    assert torch.equal(
        read_frames(videos[kind], idx, method="seek"), read_frames(videos[kind], idx, method="sequential")
    )


def test_index_tensor_and_numpy_inputs(videos):
    path = videos["mp4"]
    assert _indices(read_frames(path, torch.tensor([4, 2]))) == [4, 2]
    assert _indices(read_frames(path, np.array([7, 1]))) == [7, 1]
    assert _indices(read_frames(path, [9, 100], threads=1)) == [9, 100]
    assert _indices(read_frames(path, [2.0, np.int64(3), torch.tensor(5), np.float32(6)])) == [2, 3, 5, 6]
    assert _indices(read_frames(path, torch.tensor(8))) == [8]


@pytest.mark.parametrize(
    "indices, shown",
    [
        ([0, 1.7], "1.7"),
        ([float("nan")], "nan"),
        ([float("inf")], "inf"),
        (torch.tensor([1.5]), "1.5"),
        (np.array([2.25]), "2.25"),
        ([True], "True"),
        (["3"], "'3'"),
        ([None], "None"),
    ],
)
def test_non_integer_frame_indices_are_refused(videos, indices, shown):
    with pytest.raises(TypeError, match=rf"mp4: frame index {re.escape(shown)} is not a( whole number|n integer)"):
        read_frames(videos["mp4"], indices)


def test_bigbuckbunny_decodes():
    path = bigbuckbunny()
    info = probe(path)
    assert (info.num_frames, info.width, info.height, info.codec) == (132, 1280, 720, "h264")
    assert info.fps == 25.0 and info.has_audio and info.audio_channels == 6 and info.audio_sample_rate == 48000
    idx = [131, 0, 64, 64, 100]
    seq = read_frames(path, idx, method="sequential")
    assert seq.shape == (5, 720, 1280, 3)
    assert torch.equal(seq, read_frames(path, idx, method="seek"))
    assert torch.equal(seq[2], seq[3]) and not torch.equal(seq[0], seq[1])
    wave = read_audio(path)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(wave.numel() - 254976 // 3) <= 1  # 5.312 s of 48 kHz audio at 16 kHz
    assert 1e-3 < wave.pow(2).mean().sqrt() < 0.1 and wave.abs().max() <= 1.0
    window = read_audio(path, 1.0, 2.5)
    assert torch.allclose(window, wave[16000:40000], atol=1e-6)


# ------------------------------------------------------------------------------------------ probe


@pytest.mark.parametrize("kind", KINDS)
def test_probe(videos, kind):
    info = probe(videos[kind])
    assert info.num_frames == NUM_FRAMES
    assert info.num_frames_source == {"mp4": "container", "mp4-hevc": "container", "avi": "decoded"}.get(
        kind, "packets"
    )
    assert (info.width, info.height) == (WIDTH, HEIGHT) and info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(AUDIO_SECONDS, abs=0.05)
    encoder_to_codec = {"libx264": "h264", "libx265": "hevc", "libvpx-vp9": "vp9", "libvpx": "vp8"}
    assert info.codec == encoder_to_codec.get(VIDEO_CODECS[kind][0], VIDEO_CODECS[kind][0])
    assert info.has_audio and info.audio_sample_rate == 48000 and info.audio_channels == 2
    assert has_audio(videos[kind])
    assert probe(videos[kind], count="packets").num_frames == NUM_FRAMES


def test_probe_count_decode(videos):
    info = probe(videos["webm-vp8"], count="decode")
    assert (info.num_frames, info.num_frames_source) == (NUM_FRAMES, "decoded")
    with pytest.raises(ValueError):
        probe(videos["mp4"], count="guess")


# ------------------------------------------------------------------------------------------ audio


def _dominant_frequency(wave: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(wave.double() * torch.hann_window(wave.numel(), dtype=torch.float64)).abs()
    return spectrum.argmax().item() * rate / wave.numel()


@pytest.mark.parametrize("kind", KINDS)
def test_read_audio_every_codec(videos, kind):
    """AAC, Opus, Vorbis and PCM tracks: the mono mix of a 440 Hz (left) and 1 kHz (right) tone."""
    wave = read_audio(videos[kind])
    assert wave.dtype == torch.float32
    assert 0 <= wave.numel() - AUDIO_SECONDS * 16000 <= 400  # AAC pads its last 1024-sample frame
    mid = wave[8000:-8000]
    spectrum = torch.fft.rfft(mid.double()).abs() / (mid.numel() / 2)
    freqs = torch.fft.rfftfreq(mid.numel(), 1 / 16000)
    at = lambda f: spectrum[(freqs - f).abs().argmin()].item()  # noqa: E731
    assert at(440) == pytest.approx(0.25, rel=0.05)  # mean of the channels: 0.5 / 2
    if AUDIO_CODECS[kind] != "vorbis":  # FFmpeg's experimental native Vorbis encoder damps the right channel
        assert at(1000) == pytest.approx(0.10, rel=0.05)  # 0.2 / 2


def test_downmix_is_channel_mean_and_windows_cut_exactly(media_dir):
    rate = 16000
    samples = tone([440.0, 1000.0], 2.0, rate, [0.6, 0.3])
    path = make_audio_file(media_dir / "stereo16k.wav", samples, rate)
    expected = torch.from_numpy(samples.mean(0))
    wave = read_audio(path, sample_rate=rate)
    assert wave.numel() == 2 * rate
    assert (wave - expected).abs().max() < 3e-5  # s16 quantisation: half a step per channel
    window = read_audio(path, 0.25, 0.75, sample_rate=rate)
    assert torch.equal(window, wave[4000:12000])
    tail = read_audio(path, start=1.5, sample_rate=rate)
    assert torch.equal(tail, wave[24000:])
    assert torch.equal(read_audio(path, end=0.5, sample_rate=rate), wave[:8000])
    assert torch.equal(read_audio(path, 1.5, 3.0, sample_rate=rate), wave[24000:])  # cut at the track's end
    assert read_audio(path, 1.5, 3.0, sample_rate=8000).numel() == 4000  # also through the resampler


def test_resampled_window_is_aligned(media_dir):
    """A click at 0.5 s in a 44.1 kHz file lands on output sample 8000 at 16 kHz, in full and windowed reads."""
    rate = 44100
    samples = np.zeros((1, rate), dtype=np.float32)
    samples[0, rate // 2] = 0.9
    path = make_audio_file(media_dir / "click.wav", samples, rate)
    full = read_audio(path)
    assert full.numel() == 16000 and full.abs().argmax().item() == 8000
    window = read_audio(path, 0.3, 0.7)
    assert window.numel() == 6400 and window.abs().argmax().item() == 8000 - 4800
    assert torch.allclose(window, full[4800:11200], atol=1e-7)


def test_read_audio_resampler_is_not_decimation(media_dir):
    rate = 48000
    low = make_audio_file(media_dir / "low.wav", tone([1000.0], 1.0, rate, [0.5]), rate)
    high = make_audio_file(media_dir / "high.wav", tone([11000.0], 1.0, rate, [0.5]), rate)
    kept = read_audio(low)[400:-400]
    assert kept.pow(2).mean().sqrt().item() == pytest.approx(0.5 / math.sqrt(2), rel=1e-3)
    assert _dominant_frequency(kept, 16000) == pytest.approx(1000, abs=2)
    gone = read_audio(high)[400:-400]
    attenuation_db = 20 * math.log10(gone.pow(2).mean().sqrt().item() / (0.5 / math.sqrt(2)))
    assert attenuation_db < -70  # s16 quantisation noise limits the measurable floor


@pytest.mark.parametrize("kind", ["mp4", "avi", "mkv"])
def test_audio_seek_path_equals_decoding_from_start(videos, kind, monkeypatch):
    full = read_audio(videos[kind])
    monkeypatch.setattr(decode, "_AUDIO_SEEK_AFTER", 0.0)  # force seeking for late windows
    for start, end in [(2.3, 3.1), (4.0, 5.9)]:
        window = read_audio(videos[kind], start, end)
        assert torch.allclose(window, full[round(start * 16000) : round(end * 16000)], atol=1e-5)


# ------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def bad_files(media_dir, videos) -> dict:
    d = media_dir / "bad"
    d.mkdir()
    files = {}
    files["garbage"] = d / "garbage.mp4"
    files["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["empty"] = d / "empty.mp4"
    files["empty"].write_bytes(b"")
    data = videos["mp4"].read_bytes()  # moov atom at the end: cutting it loses the index
    files["truncated_mp4"] = d / "truncated.mp4"
    files["truncated_mp4"].write_bytes(data[: len(data) // 2])
    data = videos["mkv"].read_bytes()  # Matroska: the first half still decodes
    files["truncated_mkv"] = d / "truncated.mkv"
    files["truncated_mkv"].write_bytes(data[: len(data) // 2])
    files["audio_only"] = make_audio_file(d / "tone.wav", tone([440.0], 1.0, 16000), 16000)
    files["no_audio"] = make_video(d / "silent.mp4", "mp4", 10)
    files["zero_frames"] = d / "zero.mkv"  # a declared video stream without a single packet
    with av.open(str(files["zero_frames"]), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone([440.0], 0.2, 16000), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        for packet in audio.encode(frame):
            container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    return files


def _raises(match, fn, *args, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    for fn, args in [
        (read_frames, (missing, [0])),
        (read_audio, (missing,)),
        (probe, (missing,)),
        (has_audio, (missing,)),
    ]:
        assert str(missing) in _raises("file not found", fn, *args)
    _raises("is a directory", read_frames, tmp_path, [0])


@pytest.mark.parametrize("name", ["garbage", "empty", "truncated_mp4"])
def test_not_a_media_file(bad_files, name):
    path = bad_files[name]
    reason = "empty file" if name == "empty" else "not a readable media file, or corrupt/truncated"
    for fn, args in [(read_frames, (path, [0])), (read_audio, (path,)), (probe, (path,))]:
        assert str(path) in _raises(reason, fn, *args)


def test_truncated_video_reports_frame_count(bad_files):
    path = bad_files["truncated_mkv"]
    assert _indices(read_frames(path, [0, 40])) == [0, 40]  # what survives still decodes
    msg = _raises(r"frame index 149 is out of range: the video has \d+ frames", read_frames, path, [149])
    assert str(path) in msg and "looks truncated" in msg


def test_index_out_of_range_and_negative(videos):
    path = videos["mp4"]
    for method in ("auto", "sequential", "seek"):
        msg = _raises(
            f"frame index 150 is out of range: the video has {NUM_FRAMES} frames",
            read_frames,
            path,
            [3, 150],
            method=method,
        )
        assert str(path) in msg and "truncated" not in msg
    _raises("negative", read_frames, path, [-1])
    _raises("no frame indices", read_frames, path, [])
    with pytest.raises(ValueError):
        read_frames(path, [0], method="fast")


def test_no_video_stream(bad_files):
    path = bad_files["audio_only"]
    assert str(path) in _raises("no video stream", read_frames, path, [0])
    _raises("no video stream", probe, path)
    assert read_audio(path).numel() == 16000  # the audio itself is fine


def test_zero_frames(bad_files):
    path = bad_files["zero_frames"]
    assert str(path) in _raises("zero", read_frames, path, [0])
    _raises("zero frames", probe, path)


def test_no_audio_track(bad_files):
    path = bad_files["no_audio"]
    assert not has_audio(path)
    assert not probe(path).has_audio
    assert str(path) in _raises("no audio track", read_audio, path)
    _raises("no audio track", read_audio, path, 0.0, 0.2)


def test_audio_window_outside_the_track(bad_files):
    path = bad_files["audio_only"]  # 1 s long
    msg = _raises(
        r"audio window \[2.0, 3.0\] s is outside the audio track, which is 1.000 s long", read_audio, path, 2.0, 3.0
    )
    assert str(path) in msg
    _raises("outside the audio track", read_audio, path, start=1.5)
    _raises("negative", read_audio, path, -0.5, 0.5)
    _raises("end must be after start", read_audio, path, 0.5, 0.5)


def test_seek_falls_back_when_timestamps_disagree(videos, monkeypatch, caplog):
    """A frame index shifted by one frame (the AVI failure mode) must not give wrong frames."""
    real = decode.cached_index(str(videos["mp4"]))
    step = int(real.pts[1] - real.pts[0])
    shifted = FrameIndex(real.pts + step, real.key_pts + step, real.time_base)
    monkeypatch.setattr(decode, "cached_index", lambda *args, **kwargs: shifted)
    with caplog.at_level(logging.DEBUG, logger="ca2st.data.decode"):
        frames = read_frames(videos["mp4"], [140, 5, 70], method="seek")
    assert _indices(frames) == [140, 5, 70]
    assert any("decoding sequentially" in r.getMessage() for r in caplog.records)
