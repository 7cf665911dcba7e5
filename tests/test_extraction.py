"""extract_features() and `ca2st extract`: window times, features equal to forward_features, resume after a kill,
sharding between processes, broken videos, annotation files and the command line."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import ca2st
from ca2st import extraction
from ca2st.cli import main
from ca2st.data.datasets import Sample
from ca2st.engine.data import inference_dataset
from ca2st.errors import ConfigError, DataError
from ca2st.extraction import INDEX_NAME, VideoItem, extract_features
from test_prediction import TINY, make_video, randomized

SMALL = dict(fps=5, size=(24, 32), audio=False)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder with a 60 s video and a 12 s one (in a subfolder)."""
    root = tmp_path_factory.mktemp("extract") / "videos"
    (root / "sub").mkdir(parents=True)
    make_video(root / "long.mp4", seconds=60, **SMALL)
    make_video(root / "sub" / "short.mp4", seconds=12, **SMALL)
    return root


@pytest.fixture(scope="module")
def cast():
    return randomized(ca2st.build_model("cast_b16", num_classes=5, **TINY))


def index_rows(out):
    return [json.loads(line) for line in (out / INDEX_NAME).read_text().splitlines()]


def run(model, source, out, **kw):
    return extract_features(model, source, out, num_workers=0, progress=False, **kw)


def test_windows_and_features_equal_forward_features_of_the_same_clip(videos, cast, tmp_path):
    report = run(cast, videos / "long.mp4", tmp_path, window=8, stride=5)
    assert report.ok and report.written == ["long"]
    feats = load_file(tmp_path / "long.safetensors")
    # every 5 s while 8 s fit (0..50), then one window ending at the end of the video
    starts = [5.0 * k for k in range(11)] + [52.0]
    assert feats["starts"].tolist() == starts
    assert feats["ends"].tolist() == [s + 8.0 for s in starts]
    assert feats["starts"].dtype == torch.float64
    assert set(feats) == {"spatial", "temporal", "fused", "starts", "ends"}
    assert feats["spatial"].shape == (12, 32) and feats["fused"].shape == (12, 32)

    recipe = cast.input_recipe.replace(test_clips=1, test_crops=1)
    for w in (0, 7, 11):
        s, e = starts[w], starts[w] + 8.0
        item = inference_dataset([Sample("x", str(videos / "long.mp4"), None, s, e)], recipe)[0]
        clip = item[0]  # (views, C, T, H, W)
        with torch.no_grad():
            pooled = cast.forward_features(clip)
            fused = cast.head.fuse_features(pooled)
            logits = cast(clip)
        for kind in ("spatial", "temporal"):
            torch.testing.assert_close(feats[kind][w], pooled[kind][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(feats["fused"][w], fused[0], atol=1e-5, rtol=0)
        # the fused feature is what the classifier sees: the outputs are unchanged
        torch.testing.assert_close(cast.head.fc(fused), logits, atol=1e-5, rtol=0)

    with safe_open(str(tmp_path / "long.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["video"] == str(videos / "long.mp4") and meta["window"] == "8" and meta["stride"] == "5"
    assert meta["experts"] == "spatial,temporal" and meta["views"] == "1"
    assert index_rows(tmp_path) == [
        {
            "video": str(videos / "long.mp4"),
            "key": "long",
            "file": "long.safetensors",
            "windows": 12,
            "status": "ok",
            "error": "",
        }
    ]


def test_features_choice_segments_and_views(videos, cast, tmp_path):
    item = VideoItem(str(videos / "long.mp4"), "seg", start=10.0, end=21.0)
    run(cast, [item], tmp_path / "a", window=4, stride=3, features=["fused"], num_clips=2)
    feats = load_file(tmp_path / "a" / "seg.safetensors")
    assert set(feats) == {"fused", "starts", "ends"}
    assert feats["starts"].tolist() == [10.0, 13.0, 16.0, 17.0]  # the windows lie in the segment
    assert feats["ends"].tolist() == [14.0, 17.0, 20.0, 21.0]
    with pytest.raises(ConfigError, match="leave num_clips at 1 to extract tokens"):
        run(cast, [item], tmp_path / "b", features=["tokens"], num_clips=2)
    with pytest.raises(ConfigError, match="unknown features.*patches"):
        run(cast, [item], tmp_path / "b", features=["patches"])
    with pytest.raises(ConfigError, match="tokens_dtype"):
        run(cast, [item], tmp_path / "b", features=["tokens"], tokens_dtype="int8")
    # without a window: one window over the whole video
    run(cast, [VideoItem(item.path, "whole")], tmp_path / "c", features=["pooled"])
    whole = load_file(tmp_path / "c" / "whole.safetensors")
    assert set(whole) == {"spatial", "temporal", "starts", "ends"}
    assert whole["starts"].tolist() == [0.0] and whole["ends"].tolist() == [60.0]


def test_a_folder_resumes_after_a_kill(videos, cast, tmp_path, monkeypatch):
    save = extraction.save_features
    calls = []

    def killed_after_the_first(path, tensors, metadata):
        if calls:
            raise KeyboardInterrupt
        calls.append(path)
        save(path, tensors, metadata)

    monkeypatch.setattr(extraction, "save_features", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        run(cast, videos, tmp_path, window=6)
    assert (tmp_path / "long.safetensors").exists() and not (tmp_path / "sub" / "short.safetensors").exists()
    assert not list(tmp_path.rglob("*.tmp"))

    written = []
    monkeypatch.setattr(extraction, "save_features", lambda p, t, m: (written.append(p), save(p, t, m)))
    report = run(cast, videos, tmp_path, window=6)
    assert report.skipped == ["long"] and report.written == ["sub/short"]
    assert written == [tmp_path / "sub" / "short.safetensors"]
    assert load_file(tmp_path / "sub" / "short.safetensors")["starts"].tolist() == [0.0, 6.0]
    assert [(r["key"], r["status"], r["windows"]) for r in index_rows(tmp_path)] == [
        ("long", "ok", 10),
        ("sub/short", "ok", 2),
    ]
    again = run(cast, videos, tmp_path, window=6)
    assert again.written == [] and again.skipped == ["long", "sub/short"] and len(index_rows(tmp_path)) == 2
    # killed between the rename and the index line: the file counts, and its line is added from it
    (tmp_path / INDEX_NAME).unlink()
    run(cast, videos, tmp_path, window=6)
    assert sorted((r["key"], r["windows"]) for r in index_rows(tmp_path)) == [("long", 10), ("sub/short", 2)]
    assert written == [tmp_path / "sub" / "short.safetensors"]


def test_two_processes_write_each_video_once(videos, cast, tmp_path, monkeypatch):
    save = extraction.save_features
    written = []
    monkeypatch.setattr(extraction, "save_features", lambda p, t, m: (written.append(p.name), save(p, t, m)))
    items = [VideoItem(str(videos / "long.mp4"), f"v{i}", start=5.0 * i, end=5.0 * i + 4) for i in range(5)]
    reports = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        reports.append(run(cast, items, tmp_path))
    assert reports[0].written == ["v0", "v2", "v4"] and reports[1].written == ["v1", "v3"]
    assert sorted(written) == [f"v{i}.safetensors" for i in range(5)]
    assert sorted(r["key"] for r in index_rows(tmp_path)) == [f"v{i}" for i in range(5)]


def test_a_broken_video_is_named_and_counted(videos, cast, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.mp4").symlink_to(videos / "sub" / "short.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    report = run(cast, folder, tmp_path / "out", window=6)
    assert report.written == ["good"] and not report.ok
    [(path, reason)] = report.failures
    assert path == str(folder / "broken.mp4") and reason
    assert "1 video written, 0 already done, 1 failed" in report.summary()[0]
    rows = {r["key"]: r for r in index_rows(tmp_path / "out")}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"] == reason
    assert not (tmp_path / "out" / "broken.safetensors").exists()


def test_an_annotation_file_and_the_command_line(videos, cast, tmp_path, capsys):
    checkpoint = ca2st.save_model(cast, tmp_path / "model")
    annotation = tmp_path / "list.txt"
    annotation.write_text(f"{videos / 'sub' / 'short.mp4'} 1\n{tmp_path / 'missing.mp4'} 0\n")
    common = ["extract", "--checkpoint", str(checkpoint), "--workers", "0", "-q"]
    code = main([*common[:1], str(annotation), *common[1:], "--out", str(tmp_path / "a"), "--num-classes", "5"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"failed: {tmp_path / 'missing.mp4'}" in out and "1 video written, 0 already done, 1 failed" in out
    assert load_file(tmp_path / "a" / "short.safetensors")["ends"].tolist() == [12.0]

    code = main([*common[:1], str(videos), *common[1:], "--out", str(tmp_path / "b"), "--window", "20"])
    assert code == 0, capsys.readouterr()
    feats = load_file(tmp_path / "b" / "long.safetensors")
    assert feats["starts"].tolist() == [0.0, 20.0, 40.0] and feats["fused"].shape == (3, 32)
    assert (tmp_path / "b" / "sub" / "short.safetensors").exists()

    code = main([*common[:1], str(videos / "sub"), *common[1:], "--out", str(tmp_path / "c"), "--features", "tokens"])
    assert code == 0, capsys.readouterr()
    tokens = load_file(tmp_path / "c" / "short.safetensors")
    assert tokens["tokens.temporal"].shape == (1, 2, 4, 32) and tokens["tokens.temporal"].dtype == torch.float16


def test_an_audio_model_with_time_codes_and_a_composition_model(tmp_path):
    clip = make_video(tmp_path / "talk.mp4", seconds=6, fps=5, size=(24, 32), audio=True)
    cava = randomized(ca2st.build_model("cava_b16", num_classes=4, audio_frames=64, **TINY))
    assert cava.time_codes is not None
    run(cava, clip, tmp_path / "a", window=3, stride=2)
    feats = load_file(tmp_path / "a" / "talk.safetensors")
    assert feats["starts"].tolist() == [0.0, 2.0, 3.0] and {"audio", "spatial", "fused"} <= set(feats)
    recipe = cava.input_recipe.replace(test_clips=1, test_crops=1)
    video, audio, _, meta = inference_dataset([Sample("x", str(clip), None, 2.0, 5.0)], recipe)[0]
    times = torch.as_tensor(meta["intervals"])
    with torch.no_grad():
        pooled = cava.forward_features(video, audio, times)
    for kind in ("audio", "spatial"):
        torch.testing.assert_close(feats[kind][1], pooled[kind][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats["fused"][1], cava.head.fuse_features(pooled)[0], atol=1e-5, rtol=0)

    epic = randomized(
        ca2st.build_model("cast_b16", composition=True, composition_classes={"verb": 4, "noun": 6}, **TINY)
    )
    run(epic, clip, tmp_path / "b", window=3, features=["fused"])
    feats = load_file(tmp_path / "b" / "talk.safetensors")
    assert set(feats) == {"fused.verb", "fused.noun", "starts", "ends"} and feats["fused.verb"].shape == (2, 32)


def test_two_processes_run_at_once_under_torchrun_style_ranks(videos, cast, tmp_path):
    checkpoint = ca2st.save_model(cast, tmp_path / "model")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ca2st", "extract", str(videos), "--checkpoint", str(checkpoint)]
    cmd += ["--out", str(out), "--window", "30", "--workers", "0", "-q"]
    procs = [
        subprocess.Popen(cmd, env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"}, stdout=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "(process 0 of 2): 1 video written, 0 already done, 0 failed" in outputs[0]
    assert "(process 1 of 2): 1 video written, 0 already done, 0 failed" in outputs[1]
    rows = index_rows(out)
    assert sorted((r["key"], r["status"], r["windows"]) for r in rows) == [("long", "ok", 2), ("sub/short", "ok", 1)]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors")) == [
        "long.safetensors",
        "sub/short.safetensors",
    ]


def test_bad_options_are_refused(videos, cast, tmp_path):
    item = VideoItem(str(videos / "long.mp4"), "v")
    with pytest.raises(ConfigError, match="stride needs window"):
        run(cast, [item], tmp_path, stride=2)
    with pytest.raises(ConfigError, match="same file"):
        run(cast, [item, VideoItem(str(videos / "sub" / "short.mp4"), "v")], tmp_path)
    with pytest.raises(ConfigError, match="RANK"):
        run(cast, [item], tmp_path, rank=2, world_size=2)
    with pytest.raises(DataError, match="no video files"):
        run(cast, tmp_path, tmp_path / "out")


def test_tokens_are_the_streams_the_pooled_features_come_from(videos, cast, tmp_path):
    run(
        cast,
        videos / "long.mp4",
        tmp_path / "a",
        window=8,
        stride=5,
        features=["tokens", "pooled"],
        tokens_dtype="float32",
    )
    feats = load_file(tmp_path / "a" / "long.safetensors")
    assert set(feats) == {"spatial", "temporal", "tokens.spatial", "tokens.temporal", "starts", "ends"}
    # (windows, time slots, special tokens + patches, width): CLIP sees every other frame with its class token
    assert feats["tokens.spatial"].shape == (12, 2, 1 + 4, 32) and feats["tokens.temporal"].shape == (12, 2, 4, 32)
    with safe_open(str(tmp_path / "a" / "long.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["special_tokens"]) == {"spatial": 1, "temporal": 0}
    with torch.no_grad():
        for kind, expert in cast.experts.items():
            torch.testing.assert_close(expert.pool(feats[f"tokens.{kind}"]), feats[kind], atol=1e-5, rtol=0)
        recipe = cast.input_recipe.replace(test_clips=1, test_crops=1)
        clip = inference_dataset([Sample("x", str(videos / "long.mp4"), None, 25.0, 33.0)], recipe)[0][0]
        streams = cast.forward_streams(clip)
    for kind in cast.experts:
        torch.testing.assert_close(feats[f"tokens.{kind}"][5], streams[kind][0], atol=1e-5, rtol=0)
    # by default tokens are stored in float16, half the bytes
    run(cast, videos / "sub" / "short.mp4", tmp_path / "b", window=6, features=["tokens"])
    half = load_file(tmp_path / "b" / "short.safetensors")
    assert set(half) == {"tokens.spatial", "tokens.temporal", "starts", "ends"}
    assert half["tokens.spatial"].dtype == torch.float16 and half["tokens.spatial"].shape[0] == 2


def test_a_video_is_decoded_in_one_pass_per_batch_and_workers_split_the_videos(videos, cast, tmp_path, monkeypatch):
    from ca2st.data.datasets import video_dataset

    reader = video_dataset.frame_reader
    calls = []

    def counting_reader(*args, **kwargs):
        read = reader(*args, **kwargs)
        return lambda path, wanted: (calls.append((str(path), list(wanted))), read(path, wanted))[1]

    monkeypatch.setattr(video_dataset, "frame_reader", counting_reader)
    run(cast, videos / "long.mp4", tmp_path / "one", window=8, stride=5, batch_size=12)
    assert len(calls) == 1  # 12 windows, one pass
    frames = calls[0][1]
    assert frames == sorted(set(frames)) and len(frames) <= 12 * 4
    calls.clear()
    run(cast, videos / "long.mp4", tmp_path / "three", window=8, stride=5, batch_size=5)
    assert [len(c[1]) > 0 for c in calls] == [True] * 3  # 5 + 5 + 2 windows
    one, three = (load_file(tmp_path / d / "long.safetensors") for d in ("one", "three"))
    for name in one:
        torch.testing.assert_close(one[name], three[name], atol=1e-5, rtol=0)

    # two loader processes, each reading whole videos: the same files as without workers
    monkeypatch.undo()
    report = extract_features(cast, videos, tmp_path / "w2", window=6, num_workers=2, progress=False)
    assert sorted(report.written) == ["long", "sub/short"]
    run(cast, videos, tmp_path / "w0", window=6)
    for key in ("long", "sub/short"):
        a, b = (load_file(tmp_path / d / f"{key}.safetensors") for d in ("w2", "w0"))
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0)
