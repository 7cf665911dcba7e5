"""The embedded demo (a reduced run) and the predict / report commands on what it trains."""

import json

import pytest

from ca2st.cli import main
from ca2st.data.synthetic import CLASS_NAMES, SyntheticSpec
from ca2st.demo import DemoSettings, run


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
    # each of the nine training stages has its own label on the training bar (recorded in its run config)
    runs = [out / "pretrain" / f"expert_{kind}" for kind in ("spatial", "temporal", "audio")]
    runs += [out / "models" / name for name in ("spatial", "temporal", "audio", "cast", "cava", "ca2st")]
    labels = [
        json.loads(next(run.glob("checkpoint-0*/config.json")).read_text())["run"]["progress_label"] for run in runs
    ]
    assert labels[0] == "expert spatial (1/9)" and labels[7] == "cava (8/9)" and len(set(labels)) == 9


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


def test_serve_finds_the_model_the_demo_trained(demo):
    import ca2st
    from ca2st.serve import load_page

    out, _ = demo
    page = load_page(demo_dir=out, device="cpu")  # no --checkpoint: the demo's CA²ST, its names and clips
    assert page.model.needs_audio and page.labels == out / "data" / "classes.txt"
    assert [p.name for p in page.examples] == [f"val_{label}_000.mp4" for label in range(8)]
    result = page.analyse(page.examples[5])
    expected = ca2st.predict(page.model, page.examples[5], labels=page.labels, progress=False).top()
    assert result.ok and result.labels == {"classes": {e["name"]: e["prob"] for e in expected}}
    assert set(result.labels["classes"]) <= set(CLASS_NAMES)
