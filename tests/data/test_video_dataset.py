import logging

import av
import pytest
import torch
from torch.utils.data import DataLoader

from ca2st.data.datasets import Annotations, AudioSpec, Sample, VideoDataset, collate
from ca2st.data.sampling import build_sampler
from ca2st.data.transforms import EvalTransform, TrainTransform
from ca2st.errors import ConfigError, DataError
from dataset_media import make_video


def dataset(
    samples,
    root,
    *,
    train=False,
    num_frames=4,
    sampling_rate=2,
    size=32,
    num_clips=1,
    num_crops=1,
    transform=None,
    **kw,
):
    """A VideoDataset with the annotations' sampler kind, built as the engine builds one."""
    kind = samples.sampler if isinstance(samples, Annotations) else "dense"
    sampler = build_sampler(
        kind, num_frames, sampling_rate=sampling_rate, num_clips=1 if train else num_clips, mode="native"
    )
    if transform is None:
        transform = TrainTransform(size) if train else EvalTransform(size, num_crops)
    return VideoDataset(samples, root, sampler, transform, train=train, **kw)


def grey(video: torch.Tensor) -> list[int]:
    """Frame numbers encoded by dataset_media.frame_pattern, from a raw (C, T, H, W) clip."""
    return [round(float(video[:, t, -8:, -8:].mean()) / 8) for t in range(video.shape[1])]


def raw_train(v, g=None):  # keeps pixel values: (T, C, H, W) uint8 -> (C, T, H, W) float
    return v.permute(1, 0, 2, 3).float()


class RawEval:  # keeps pixel values: (T, C, H, W) uint8 -> one view (1, C, T, H, W) float
    num_crops, size = 1, 32

    def __call__(self, v, g=None):
        return v.permute(1, 0, 2, 3).float()[None]


raw_eval = RawEval()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    make_video(root / "a.mp4", 30, fps=10)
    make_video(root / "b.mp4", 20, fps=10)
    make_video(root / "mute.mp4", 20, fps=10, audio=False)
    make_video(root / "long.mp4", 60, fps=10)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    data = (root / "a.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    with av.open(str(root / "empty.mp4"), "w") as out:  # a header, no frames
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    return root


def annotations(samples, sampler="dense"):
    return Annotations(list(samples), 5, "test", sampler=sampler, flip=True)


def test_training_item_shapes_and_determinism(media):
    ann = annotations([Sample("a", "a.mp4", 3), Sample("b", "b.mp4", 1)])
    ds = dataset(ann, media, train=True)
    video, audio, target, meta = ds[0]
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32
    assert audio is None and int(target) == 3
    assert meta["id"] == "a" and meta["times"].shape == (4,) and meta["skipped"] == 0
    assert meta["intervals"].shape == (3, 2)
    again = ds[0][0]
    torch.testing.assert_close(video, again)
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], video)


def test_exact_frames_reach_the_transform(media):
    ds = dataset(annotations([Sample("a", "a.mp4", 0)]), media, num_frames=4, sampling_rate=3, transform=raw_eval)
    video, _, _, meta = ds[0]
    # 30 frames, span 10, centred start 10
    assert grey(video[0]) == [10, 13, 16, 19]
    torch.testing.assert_close(meta["times"], torch.tensor([[1.0, 1.3, 1.6, 1.9]]))


def test_segment_inside_an_untrimmed_video(media):
    sample = Sample("seg", "long.mp4", 2, start=2.0, end=4.0)
    ds = dataset(annotations([sample], "segment"), media, num_frames=4, transform=raw_eval)
    video, _, _, meta = ds[0]
    assert grey(video[0]) == [
        i % 32 for i in (22, 27, 32, 37)
    ]  # centres of 4 parts of frames 20..39 (levels wrap at 32)
    torch.testing.assert_close(meta["window"], torch.tensor([[2.0, 4.0]]))
    frames = Sample("f", "long.mp4", 2, start=5, end=9, unit="frames")
    ds = dataset(annotations([frames], "segment"), media, num_frames=4, transform=raw_eval)
    assert grey(ds[0][0][0]) == [5, 6, 7, 8]


def test_multi_view_returns_every_view(media):
    ds = dataset(annotations([Sample("a", "a.mp4", 2)]), media, num_clips=2, num_crops=3)
    video, audio, target, meta = ds[0]
    assert video.shape == (6, 3, 4, 32, 32) and meta["times"].shape == (6, 4) and meta["window"].shape == (6, 2)
    torch.testing.assert_close(meta["times"][0], meta["times"][2])
    assert not torch.equal(meta["times"][0], meta["times"][3])
    assert not torch.equal(video[0], video[2])  # different crops


def test_audio_only_when_asked(media):
    ann = annotations([Sample("a", "a.mp4", 1)])
    ds = dataset(ann, media, audio=AudioSpec(100))
    video, audio, _, meta = ds[0]
    assert audio.shape == (1, 100, 128) and torch.isfinite(audio).all() and meta["silent_audio"] == 0
    multi = dataset(ann, media, audio=AudioSpec(100), num_clips=2, num_crops=3)
    assert multi[0][1].shape == (6, 100, 128)
    train = dataset(ann, media, train=True, audio=AudioSpec(100))
    assert train[0][1].shape == (100, 128)
    clipwin = dataset(ann, media, audio=AudioSpec(50, window="clip"))
    assert clipwin[0][1].shape == (1, 50, 128)


def test_missing_audio_track_policy(media, caplog):
    ann = annotations([Sample("m", "mute.mp4", 1)])
    with pytest.raises(DataError, match=r"mute\.mp4: the file has no audio track, but the model needs audio") as err:
        dataset(ann, media, audio=AudioSpec(50))[0]
    assert "override data.missing_audio=silence" in str(err.value)  # what the user types, not Python
    dataset(ann, media)[0]  # no audio asked: no problem
    ds = dataset(ann, media, audio=AudioSpec(50, missing="silence"))
    with caplog.at_level(logging.WARNING):
        _, audio, _, meta = ds[0]
    assert audio.shape == (1, 50, 128) and meta["silent_audio"] == 1 and ds.stats["silent_audio"] == 1
    assert (audio == audio[0, 0]).all()
    assert "feeding silence" in caplog.text
    separate = annotations([Sample("m", "mute.mp4", 1, audio_path="nowhere.wav")])
    with pytest.raises(DataError, match=r"nowhere\.wav: audio file not found"):
        dataset(separate, media, audio=AudioSpec(50))[0]


@pytest.mark.parametrize(
    "sample, message",
    [
        (
            Sample("x", "missing.mp4", 0, source="list.csv:7"),
            r"missing\.mp4: video file not found \(sample x, list\.csv:7\)",
        ),
        (Sample("x", "broken.mp4", 0), r"broken\.mp4"),
        (
            Sample("x", "a.mp4", 0, start=10.0, end=12.0),
            r"a\.mp4: segment \[10\.0, 12\.0\] seconds starts at .* outside",
        ),
        (Sample("x", "empty.mp4", 0), r"empty\.mp4: no video stream"),
    ],
)
def test_bad_inputs_raise_with_the_file_and_reason(media, sample, message):
    ds = dataset(annotations([sample]), media)
    with pytest.raises(DataError, match=message):
        ds[0]


def test_truncated_video_raises(media):
    ds = dataset(annotations([Sample("t", "truncated.mp4", 0)]), media, num_frames=4, sampling_rate=9)
    with pytest.raises(DataError, match=r"truncated\.mp4"):
        ds[0]


def test_skip_policy_is_deterministic_counted_and_logged(media, caplog):
    ann = annotations(
        [Sample("a", "a.mp4", 0), Sample("x", "missing.mp4", 1), Sample("y", "broken.mp4", 2), Sample("b", "b.mp4", 3)]
    )
    ds = dataset(ann, media, train=True, on_error="skip")
    with caplog.at_level(logging.WARNING):
        _, _, target, meta = ds[1]
    assert int(target) == 3 and meta["skipped"] == 2 and meta["requested"] == 1 and meta["index"] == 3
    assert ds.stats["skipped"] == 2 and "missing.mp4" in caplog.text and "broken.mp4" in caplog.text
    assert int(ds[2][2]) == 3 and int(ds[0][2]) == 0
    all_bad = annotations([Sample("x", "missing.mp4", 1), Sample("y", "broken.mp4", 2)])
    with pytest.raises(DataError, match="consecutive samples from index 0 are unusable"):
        dataset(all_bad, media, train=True, on_error="skip", max_skips=3)[0]


def test_evaluation_never_substitutes(media):
    ann = annotations([Sample("a", "a.mp4", 0), Sample("x", "missing.mp4", 1)])
    with pytest.raises(ConfigError, match="evaluation never substitutes a sample"):
        dataset(ann, media, train=False, on_error="skip")
    with pytest.raises(ConfigError, match="not allowed in training"):
        dataset(ann, media, train=True, on_error="exclude")
    ds = dataset(ann, media, on_error="exclude", num_clips=2, num_crops=3)
    video, _, target, meta = ds[1]
    assert meta["excluded"] == 1 and "missing.mp4: video file not found" in meta["error"]
    assert int(target) == -1 and video.shape == (6, 3, 4, 32, 32) and meta["id"] == "x"
    assert ds.stats["excluded"] == 1
    with pytest.raises(DataError):
        dataset(ann, media)[1]


def test_composition_targets_and_dataloader_workers(media):
    ann = Annotations(
        [
            Sample("a", "a.mp4", {"verb": 1, "noun": 2}),
            Sample("x", "missing.mp4", {"verb": 3, "noun": 4}),
            Sample("b", "b.mp4", {"verb": 5, "noun": 6}),
        ],
        {"verb": 97, "noun": 300},
        "test",
        sampler="segment",
    )
    ds = dataset(ann, media, train=True, on_error="skip", transform=TrainTransform(32, rand_augment=None), num_frames=4)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    video, audio, target, meta = next(iter(loader))
    assert video.shape == (3, 3, 4, 32, 32)
    assert target["verb"].tolist() == [1, 5, 5] and target["noun"].tolist() == [2, 6, 6]
    assert meta["skipped"].tolist() == [0, 1, 0] and meta["id"] == ["a", "b", "b"]
    ds_eval = dataset(ann, media, on_error="exclude", transform=EvalTransform(32, 1), num_frames=4)
    batch = next(iter(DataLoader(ds_eval, batch_size=3, num_workers=0, collate_fn=collate)))
    assert batch[1] is None and batch[0].shape == (3, 1, 3, 4, 32, 32)  # every view, even one
    assert batch[3]["excluded"].tolist() == [0, 1, 0] and batch[2]["verb"].tolist() == [1, -1, 5]


def test_empty_dataset_and_bad_options(media):
    with pytest.raises(DataError, match="no samples"):
        dataset(annotations([]), media)
    with pytest.raises(ConfigError, match="missing_audio"):
        AudioSpec(50, missing="zeros")
    with pytest.raises(ConfigError, match="audio_window"):
        AudioSpec(50, window="file")


def test_load_group_reads_a_file_once_and_equals_single_items(tmp_path, monkeypatch):
    """The windows of one long file: one decoding pass for their frames, one audio read (44.1 kHz, resampled), and
    items equal to loading each sample alone."""
    from ca2st.data import decode

    path = make_video(tmp_path / "long.mp4", num_frames=200, fps=20, sample_rate=44100, tone_hz=700.0)
    samples = [Sample(str(k), str(path), None, start=1.5 * k, end=1.5 * k + 2.0) for k in range(6)]
    spec = AudioSpec(frames=64)
    ds = dataset(samples, None, num_frames=4, sampling_rate=3, num_clips=2, audio=spec)
    frame_calls, audio_calls = [], []
    reader, read_audio = ds.read_frames, decode.read_audio
    ds.read_frames = lambda p, wanted: (frame_calls.append(list(wanted)), reader(p, wanted))[1]
    monkeypatch.setattr(decode, "read_audio", lambda *a, **k: (audio_calls.append(a[1:3]), read_audio(*a, **k))[1])
    group = ds.load_group(range(6))
    assert len(frame_calls) == 1 and frame_calls[0] == sorted(set(frame_calls[0]))
    assert audio_calls == [(0.0, 9.5)]  # the union of the windows' spans, read once

    frame_calls.clear(), audio_calls.clear()
    for k, (video, audio, _, meta) in enumerate(group):
        alone = ds[k]
        assert torch.equal(video, alone[0]) and video.shape == (2, 3, 4, 32, 32)
        torch.testing.assert_close(audio, alone[1], atol=1e-4, rtol=0)  # log-mel of waves equal to ~1e-7
        for key in ("times", "window", "intervals"):
            torch.testing.assert_close(meta[key], alone[3][key], atol=1e-6, rtol=0)
        assert meta["id"] == str(k) and meta["index"] == k
    assert len(frame_calls) == 6 and len(audio_calls) == 6  # alone: a pass and a read per sample

    with pytest.raises(ValueError, match="one video file"):
        other = make_video(tmp_path / "other.mp4", num_frames=40, audio=False)
        dataset([samples[0], Sample("x", str(other), None)], None).load_group([0, 1])
    broken = dataset([samples[0], Sample("y", str(tmp_path / "gone.mp4"), None)], None)
    with pytest.raises(DataError, match="gone.mp4: video file not found"):
        broken.load_group([0, 1])


def test_audio_window_is_read_audio_of_the_window(tmp_path):
    from ca2st.data.decode import audio_window, read_audio

    path = make_video(tmp_path / "a.mp4", num_frames=100, fps=25, sample_rate=48000)
    whole = read_audio(path, 0.3, 3.7)
    for start, end in ((0.3, 1.0), (1.234, 2.5), (2.0, 3.7)):
        part = audio_window(whole, 0.3, start, end, path=str(path))
        torch.testing.assert_close(part, read_audio(path, start, end), atol=1e-6, rtol=0)
    to_end = read_audio(path, 3.0, 10.0)  # cut short at the end of the track, as read_audio is
    torch.testing.assert_close(audio_window(read_audio(path, 2.0, 10.0), 2.0, 3.0, 10.0), to_end, atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="outside the audio track"):
        audio_window(whole, 0.3, 3.8, 4.0, path=str(path))


def test_load_group_in_training_draws_what_single_items_draw(tmp_path):
    """The group's union audio span is worked out without touching an item's random generator: each item gets the
    clip, augmentation and audio crop it gets when loaded alone."""
    path = make_video(tmp_path / "long.mp4", num_frames=120, fps=20, sample_rate=16000)
    samples = [Sample(str(k), str(path), None, start=1.0 * k, end=1.0 * k + 2.5) for k in range(3)]
    ds = dataset(samples, None, train=True, num_frames=4, sampling_rate=2, audio=AudioSpec(frames=64))
    for k, (video, audio, _, meta) in enumerate(ds.load_group(range(3))):
        alone = ds[k]
        assert torch.equal(video, alone[0])
        torch.testing.assert_close(audio, alone[1], atol=1e-4, rtol=0)
        torch.testing.assert_close(meta["window"], alone[3]["window"], atol=1e-6, rtol=0)
