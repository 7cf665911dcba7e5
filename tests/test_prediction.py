"""predict(): top-k on a generated video (video-only and audio models), sliding-window timeline and its files,
and the input recipe and class names a checkpoint carries."""

import csv
import json
import os

import av
import numpy as np
import pytest
import torch

import ca2st
from ca2st.data.decode import read_frames
from ca2st.data.official_sampling import OfficialDenseSampler, OfficialSegmentSampler
from ca2st.data.transforms import EvalTransform, to_tchw
from ca2st.errors import ConfigError, DataError
from ca2st.prediction import Prediction, predict, sliding_windows

FPS = 10
TINY = dict(embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32)


def make_video(path, seconds=3.0, fps=FPS, size=(40, 56), audio=True, still=False):
    """H.264 + AAC mp4: frames change over time (unless ``still``), audio is a tone whose pitch changes halfway."""
    n = int(seconds * fps)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[1], size[0], "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "12"}
        if audio:
            aus = out.add_stream("aac", rate=16000)
            aus.layout = "mono"
        for i in range(n):
            img = np.zeros((size[0], size[1], 3), np.uint8)
            if still:
                i = 0
            img[..., 0] = (20 * i) % 256
            img[: size[0] // 2, : size[1] // 2, 1] = 200 if (i // 10) % 2 else 30
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if audio:
            t = np.arange(int(seconds * 16000)) / 16000
            wave = (0.3 * np.sin(2 * np.pi * np.where(t < seconds / 2, 300, 1200) * t)).astype(np.float32)
            for k in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, k : k + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16000, k
                for p in aus.encode(frame):
                    out.mux(p)
            for p in aus.encode():
                out.mux(p)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("predict") / "clip.mp4")


def randomized(model, std=0.3):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model.eval()


@pytest.fixture(scope="module")
def cast():
    return randomized(ca2st.build_model("cast_b16", num_classes=5, **TINY))


def test_predict_topk_matches_the_manual_pipeline(video, cast, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cut\nstir\n\nwash\nopen\nclose\n")
    pred = predict(cast, video, labels=labels, topk=3, num_clips=2, num_crops=3, sampling_rate=2, progress=False)
    assert isinstance(pred, Prediction) and pred.num_views == 6 and pred.duration == pytest.approx(3.0)
    top = pred.top()
    assert len(top) == 3 and [t["name"] for t in top] == [
        ["cut", "stir", "wash", "open", "close"][t["class"]] for t in top
    ]
    assert top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]
    # the same views built by hand: the official dense sampler, EvalTransform (long side 56·32/40 = 44.8 cut to 44,
    # as the official loaders do), softmax per view, mean over views
    clips = OfficialDenseSampler(clip_len=4, sampling_rate=2, num_clips=2)(30, float(FPS))
    views = []
    for clip in clips:
        frames = to_tchw(read_frames(video, list(clip.indices)))
        views.append(EvalTransform(32, 3, truncate_long_side=True)(frames))
    with torch.no_grad():
        expected = cast(torch.cat(views)).softmax(-1).mean(0)
    torch.testing.assert_close(pred.probs["class"], expected, atol=1e-5, rtol=1e-4)
    assert pred.probs["class"].sum() == pytest.approx(1.0, abs=1e-5)
    text = pred.summary()
    assert "top-3" in text and top[0]["name"] in text
    files = pred.save(tmp_path / "out")
    assert set(files) == {"json", "csv"}  # no timeline -> no plot
    data = json.loads(files["json"].read_text())
    assert data["top"]["class"][0]["name"] == top[0]["name"] and "timeline" not in data


def test_segment_sampler_and_bf16(video, cast):
    fp32 = predict(cast, video, sampler="segment", progress=False)
    bf16 = predict(cast, video, sampler="segment", precision="bf16", progress=False)
    torch.testing.assert_close(bf16.probs["class"], fp32.probs["class"], atol=0.05, rtol=0.05)
    with pytest.raises(ConfigError):
        predict(cast, video, sampler="random", progress=False)


def test_sliding_window_timeline_and_files(video, cast, tmp_path):
    pred = predict(
        cast, video, labels=["a", "b", "c", "d", "e"], window=1.0, stride=0.5, sampling_rate=2, progress=False
    )
    assert pred.has_timeline
    assert list(zip(pred.starts.tolist(), pred.ends.tolist())) == [(0, 1), (0.5, 1.5), (1, 2), (1.5, 2.5), (2, 3)]
    wp = pred.window_probs["class"]
    assert wp.shape == (5, 5)
    torch.testing.assert_close(pred.probs["class"], wp.mean(0))
    # the windows see different content, so their predictions differ
    assert not torch.allclose(wp[0], wp[-1])
    files = pred.save(tmp_path, stem="timeline")
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == 5 and rows[2]["start"] == "1.000" and rows[2]["end"] == "2.000"
    assert rows[0]["top1_name"] == ["a", "b", "c", "d", "e"][int(wp[0].argmax())]
    assert float(rows[0]["top1_prob"]) == pytest.approx(float(wp[0].max()), abs=1e-4)
    data = json.loads(files["json"].read_text())
    assert len(data["timeline"]) == 5 and data["window"] == 1.0 and data["stride"] == 0.5
    assert data["timeline"][3]["top"]["class"][0]["prob"] == pytest.approx(float(wp[3].max()), abs=1e-6)
    assert "timeline" in pred.summary()


def test_windows_decoded_in_loader_workers_give_the_same_timeline(video, cast, monkeypatch):
    from ca2st.engine import data as engine_data

    workers = []
    real = engine_data.build_loader

    def spy(dataset, batch_size, num_workers, *args, **kwargs):
        workers.append(num_workers)
        return real(dataset, batch_size, num_workers, *args, **kwargs)

    monkeypatch.setattr(engine_data, "build_loader", spy)
    common = dict(window=1.0, stride=0.5, sampling_rate=2, batch_size=2, progress=False)
    parallel = predict(cast, video, **common)  # five windows: decoded by worker processes
    inline = predict(cast, video, num_workers=0, **common)
    single = predict(cast, video, sampling_rate=2, progress=False)  # one window: no worker to start
    assert workers == [min(4, os.cpu_count()), 0, 0]
    torch.testing.assert_close(parallel.window_probs["class"], inline.window_probs["class"], atol=0, rtol=0)
    assert single.num_views == 1


def test_window_probabilities_equal_a_prediction_of_the_cut_segment(video, cast, tmp_path):
    pred = predict(cast, video, window=1.5, sampler="segment", progress=False)
    assert pred.starts.tolist() == [0.0, 1.5]
    # the second window is the official segment sampler over frames 15..29 (1.5 s to 3.0 s), built here by hand
    clip = OfficialSegmentSampler(4, num_clips=1)(15, float(FPS), first=15)[0]
    frames = to_tchw(read_frames(video, list(clip.indices)))
    with torch.no_grad():
        expected = cast(EvalTransform(32, 1, truncate_long_side=True)(frames)).softmax(-1)[0]
    torch.testing.assert_close(pred.window_probs["class"][1], expected, atol=1e-5, rtol=1e-4)


def test_audio_model(video, tmp_path):
    model = randomized(ca2st.build_model("cava_b16", num_classes=4, audio_frames=64, **TINY))
    assert model.needs_audio and model.time_codes is not None
    pred = predict(model, video, window=1.5, sampling_rate=2, progress=False)
    assert pred.window_probs["class"].shape == (2, 4)
    # the pitch changes halfway: the two windows hear different sounds
    assert not torch.allclose(pred.window_probs["class"][0], pred.window_probs["class"][1])
    # still frames, no time codes: the windows differ only by what they hear
    still = make_video(tmp_path / "still.mp4", still=True)
    model = randomized(ca2st.build_model("cava_b16", num_classes=4, audio_frames=64, time_encoding=False, **TINY))
    pred = predict(model, still, window=1.5, sampling_rate=2, progress=False)
    assert not torch.allclose(pred.window_probs["class"][0], pred.window_probs["class"][1], atol=1e-4)
    mute = make_video(tmp_path / "mute.mp4", seconds=1.0, audio=False)
    with pytest.raises(DataError, match="audio"):
        predict(model, mute, progress=False)


def test_composition_model_actions(video):
    model = randomized(
        ca2st.build_model("cast_b16", composition=True, composition_classes={"verb": 4, "noun": 6}, **TINY)
    )
    names = {"verb": ["take", "put", "open", "close"], "noun": ["cup", "pan", "lid", "tap", "knife", "bowl"]}
    pred = predict(model, video, labels=names, topk=3, window=1.5, progress=False)
    assert pred.tasks == ["verb", "noun"]
    acts = pred.actions()
    assert len(acts) == 3
    pv, pn = pred.probs["verb"], pred.probs["noun"]
    best = torch.outer(pv, pn).flatten().topk(3)
    assert [(a["verb"], a["noun"]) for a in acts] == [divmod(int(i), 6) for i in best.indices]
    assert acts[0]["prob"] == pytest.approx(float(best.values[0]), rel=1e-5)
    assert acts[0]["name"] == f"{names['verb'][acts[0]['verb']]} {names['noun'][acts[0]['noun']]}"
    data = pred.to_dict()
    assert "actions" in data and "actions" in data["timeline"][0]
    assert "verbs" in pred.summary() and "actions" in pred.summary()
    with pytest.raises(ConfigError):
        predict(model, video, labels=["a", "b"], progress=False)  # one list for two tasks


def test_sliding_windows():
    assert sliding_windows(3.0, 1.0) == [(0, 1), (1, 2), (2, 3)]
    assert sliding_windows(3.2, 1.0, 1.0) == [(0, 1), (1, 2), (2, 3), (2.2, 3.2)]  # the tail is covered
    assert sliding_windows(0.8, 2.0) == [(0.0, 0.8)]
    assert sliding_windows(2.0, 1.0, 0.25)[-1] == (1.0, 2.0) and len(sliding_windows(2.0, 1.0, 0.25)) == 5
    with pytest.raises(ConfigError):
        sliding_windows(3.0, 0.0)
    with pytest.raises(ConfigError):
        sliding_windows(3.0, 1.0, -1.0)


def test_a_checkpoint_trained_with_segment_sampling_predicts_with_it(synthetic_data, tmp_path, capsys):
    from ca2st.cli import main
    from ca2st.engine.train import train

    from helpers import smoke_config

    result = train(
        smoke_config(
            tmp_path / "run",
            "optim.epochs=1",
            "data.sampler=segment",
            "data.test_clips=2",
            "data.test_crops=1",
            f"data.options={{classes: {synthetic_data.files['classes']}}}",
            data=synthetic_data,
        )
    )
    clip = synthetic_data.root / synthetic_data.files["val"].read_text().split()[0]
    model = ca2st.load_model(result.last_checkpoint)
    names = synthetic_data.files["classes"].read_text().splitlines()
    pred = predict(model, clip, progress=False)  # no flags: segment sampling, 2 clips, the run's class names
    assert pred.num_views == 2 and pred.meta["input"]["sampler"] == "segment"
    torch.testing.assert_close(
        pred.probs["class"], predict(model, clip, sampler="segment", num_clips=2, progress=False).probs["class"]
    )
    assert not torch.allclose(
        pred.probs["class"], predict(model, clip, sampler="dense", num_clips=2, progress=False).probs["class"]
    )
    assert pred.top()[0]["name"] == names[int(pred.probs["class"].argmax())]
    assert (
        main(["predict", str(clip), "--checkpoint", str(result.last_checkpoint), "--out", str(tmp_path / "p"), "-q"])
        == 0
    )
    assert names[int(pred.probs["class"].argmax())] in capsys.readouterr().out
    saved = json.loads((tmp_path / "p" / f"{clip.stem}.json").read_text())
    assert saved["views"] == 2 and saved["top"]["class"][0]["name"] == pred.top()[0]["name"]
    rows = list(csv.DictReader((tmp_path / "p" / f"{clip.stem}.csv").open()))
    assert rows[0]["path"] == str(clip) and rows[0]["top1_name"] == pred.top()[0]["name"]


def test_the_summary_caps_top_k_by_the_class_count_and_counts_in_words():
    probs = torch.tensor([0.2, 0.5, 0.3])
    pred = Prediction("v.mp4", ["class"], {"class": probs}, {"class": ["a", "b", "c"]}, k=5, duration=2.0)
    pred.window, pred.stride, pred.starts, pred.ends = 2.0, 2.0, torch.zeros(1), torch.full((1,), 2.0)
    pred.window_probs = {"class": probs[None]}
    lines = pred.summary().splitlines()
    assert lines[0] == "v.mp4: 2.00 s, 1 view, 1 window of 2 s every 2 s"
    assert lines[1] == "  top-3:" and "top-5" not in pred.summary()


def test_the_timeline_plot_scales_to_the_data_and_names_the_classes_shown():
    # 400 classes, none above 3%: the y-axis follows the data instead of squashing the curves at the bottom
    torch.manual_seed(0)
    logits = torch.randn(6, 400) * 0.5
    logits[:, 7] += 2.0
    window_probs = logits.softmax(-1)
    names = [f"class {i}" for i in range(400)]
    pred = Prediction("long.mp4", ["class"], {"class": window_probs.mean(0)}, {"class": names}, duration=6.0)
    pred.window, pred.stride = 1.0, 1.0
    pred.starts, pred.ends = torch.arange(6.0), torch.arange(1.0, 7.0)
    pred.window_probs = {"class": window_probs}
    fig = pred.timeline_figure(top=8)
    ax = fig.axes[0]
    peak = float(window_probs[:, window_probs.mean(0).topk(8).indices].max())
    assert peak < 0.1 and ax.get_ylim() == pytest.approx((0.0, 1.1 * peak))
    legend = ax.get_legend()
    lead = window_probs.mean(0).topk(8).indices.tolist()
    assert [t.get_text().split(" (")[0] for t in legend.get_texts()] == [names[c] for c in lead]
    assert legend.get_title().get_text() == "top 8 of 400 classes (mean)"
    # a confident model keeps the axis at most 1
    sure = torch.tensor([[0.99, 0.01], [0.98, 0.02]])
    pred = Prediction("v.mp4", ["class"], {"class": sure.mean(0)}, {"class": ["a", "b"]}, duration=2.0)
    pred.window, pred.stride, pred.starts, pred.ends = 1.0, 1.0, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])
    pred.window_probs = {"class": sure}
    ax = pred.timeline_figure(top=5).axes[0]
    assert ax.get_ylim() == (0.0, 1.0) and len(ax.get_legend().get_texts()) == 2


def test_predict_window_writes_its_files_into_out_and_never_into_the_working_folder(video, cast, tmp_path, monkeypatch):
    from ca2st.cli import main

    cast.class_names = {"class": ["a", "b", "c", "d", "e"]}
    checkpoint = ca2st.save_model(cast, tmp_path / "model")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    common = ["predict", str(video), "--checkpoint", str(checkpoint), "--window", "1.5", "--workers", "0", "-q"]
    assert main([*common, "--out", str(tmp_path / "chosen")]) == 0
    assert sorted(p.name for p in (tmp_path / "chosen").iterdir()) == ["clip.csv", "clip.json", "clip_timeline.png"]
    assert list(work.iterdir()) == []
    assert main(common) == 0  # no --out: a folder of its own, not the files loose in the working folder
    assert sorted(p.name for p in (work / "runs" / "predict").iterdir()) == [
        "clip.csv",
        "clip.json",
        "clip_timeline.png",
    ]
    assert [p.name for p in work.iterdir()] == ["runs"]
