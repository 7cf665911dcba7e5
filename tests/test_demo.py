"""The embedded demo (a reduced run) and the predict / report commands on what it trains."""

import json

import pytest

from ca2st.cli import main
from ca2st.data.synthetic import CLASS_NAMES, SyntheticSpec, cues_of, render_frames, write_dataset
from ca2st.demo import DemoSettings, run


def test_synthetic_cues_are_where_they_should_be(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    spec = SyntheticSpec(size=32, num_frames=8)
    bright, dark = render_frames(0, 0, spec, rng), render_frames(0, 1, spec, rng)
    assert bright[-1].mean() > bright[0].mean() + 40 and dark[0].mean() > dark[-1].mean() + 40
    red, blue = render_frames(0, 0, spec, rng).reshape(-1, 3), render_frames(1, 0, spec, rng).reshape(-1, 3)
    assert (red[:, 0] > red[:, 2] + 100).any() and (blue[:, 2] > blue[:, 0] + 100).any()
    assert [cues_of(k) for k in (0, 5, 7)] == [(0, 0, 0), (1, 0, 1), (1, 1, 1)]
    files = write_dataset(tmp_path, SyntheticSpec(per_class_train=1, per_class_val=1, size=32, num_frames=8))
    assert len(files["train"].read_text().split("\n")) == len(CLASS_NAMES) + 1
    again = write_dataset(tmp_path, SyntheticSpec(per_class_train=1, per_class_val=1, size=32, num_frames=8))
    assert again == files  # reused, not rewritten


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(
        pretrain_epochs=1,
        epochs=1,
        batch_size=8,
        workers=0,
        spec=SyntheticSpec(per_class_train=2, per_class_val=1, size=32, num_frames=8),
    )
    return out, run(out, settings=settings)


def test_demo_writes_results_as_designed(demo):
    out, results = demo
    saved = json.loads((out / "results.json").read_text())
    assert saved["chance"] == pytest.approx(1 / 8)
    assert set(saved["accuracy"]) == {"spatial", "temporal", "audio", "cast", "cava", "ca2st"}
    assert all(0.0 <= v <= 1.0 for v in saved["accuracy"].values())
    assert (out / "results.png").stat().st_size > 0 and "| ca2st |" in (out / "results.md").read_text()


def test_predict_and_report_commands(demo, tmp_path, capsys):
    out, _ = demo
    model_dir = out / "models" / "ca2st"
    checkpoint = sorted(model_dir.glob("checkpoint-0*"))[-1]
    video = next((out / "data" / "videos").glob("val_*.mp4"))
    assert (
        main(
            [
                "predict",
                str(video),
                "--checkpoint",
                str(checkpoint),
                "--labels",
                str(out / "data" / "classes.txt"),
                "--sampler",
                "segment",
                "--topk",
                "3",
                "--window",
                "1.0",
                "--out",
                str(tmp_path),
                "-q",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert any(name in printed for name in CLASS_NAMES)
    assert (tmp_path / f"{video.stem}.json").exists() and (tmp_path / f"{video.stem}_timeline.png").exists()
    results = [str(out / "models" / name / "eval" / "results.json") for name in ("cast", "ca2st")]
    assert main(["report", *results, "--out", str(tmp_path / "table.csv")]) == 0
    printed = capsys.readouterr().out
    assert "H.M." in printed and "cast" in printed and "ca2st" in printed
    assert "H.M." in (tmp_path / "table.csv").read_text()
