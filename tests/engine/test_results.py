"""Result files: results.json, per-class CSV, predictions CSV (class names, paths), probabilities, confusion plot."""

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_toys import C, ToyDataset, ToyModel, toy
from torch.utils.data import DataLoader

from ca2st.data.datasets import collate
from ca2st.engine.evaluate import evaluate
from ca2st.engine.results import EvalResult

NAMES = ["cut", "stir", "wash", "open", "close"]


def test_output_files(tmp_path):
    logits, targets = toy(n=8, views=2)
    res = evaluate(
        ToyModel(),
        DataLoader(ToyDataset(logits, targets, excluded=[2], paths=True), batch_size=4, collate_fn=collate),
        progress=False,
        class_names=NAMES,
        dataset="toy",
        model_name="cast",
        run_name="cast_toy",
    )
    files = res.save(tmp_path / "out", probabilities=True)
    assert set(files) == {"results", "per_class", "predictions", "confusion", "probabilities", "summary"}
    data = json.loads(files["results"].read_text())
    assert data["dataset"] == "toy" and data["model"] == "cast" and data["run"] == "cast_toy" and data["views"] == 2
    assert data["metrics"]["top1"] == pytest.approx(res.metrics["top1"])
    assert data["counts"]["excluded"] == 1 and data["excluded"][0]["id"] == "s2"
    assert data["tasks"] == {"class": C}
    rows = list(csv.DictReader(files["per_class"].open()))
    assert [r["name"] for r in rows] == NAMES
    assert sum(int(r["support"]) for r in rows) == 7
    assert sum(int(r["correct"]) for r in rows) == round(res.metrics["top1"] * 7)
    assert files["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from safetensors.torch import load_file

    saved = load_file(str(files["probabilities"]))
    torch.testing.assert_close(saved["class_probs"], res.probs["class"])
    assert "top-1" in files["summary"].read_text()
    assert res.confusion().sum() == 7


def test_predictions_csv_holds_class_names_and_paths(tmp_path):
    logits, targets = toy(n=4, views=2)
    res = evaluate(
        ToyModel(),
        DataLoader(ToyDataset(logits, targets, paths=True), batch_size=4, collate_fn=collate),
        progress=False,
        class_names=NAMES,
    )
    preds = list(csv.DictReader(res.save_predictions_csv(tmp_path / "p.csv", topk=3).open()))
    assert list(preds[0]) == [
        "index",
        "id",
        "path",
        "target",
        "target_name",
        "pred",
        "pred_name",
        "top3",
        "top3_names",
        "top3_probs",
    ]
    for i, row in enumerate(preds):
        probs = torch.stack([lg.softmax(-1).mean(0) for lg in logits])[i]
        top = probs.topk(3).indices.tolist()
        assert row["id"] == f"s{i}" and row["path"] == f"/videos/s{i}.mp4"
        assert int(row["pred"]) == top[0] and row["pred_name"] == NAMES[top[0]]
        assert row["target_name"] == NAMES[targets[i]]
        assert row["top3"].split() == [str(c) for c in top]
        assert row["top3_names"].split("; ") == [NAMES[c] for c in top]


def test_predictions_csv_of_a_composition_model(tmp_path):
    logits, targets = toy(n=3, views=1, composition=True)
    verbs, nouns = ["take", "put", "wash"], ["cup", "pan", "knife", "tap"]
    res = evaluate(
        ToyModel(composition=True),
        DataLoader(ToyDataset(logits, targets), batch_size=3, collate_fn=collate),
        progress=False,
        class_names={"verb": verbs, "noun": nouns},
    )
    preds = list(csv.DictReader(res.save_predictions_csv(tmp_path / "p.csv").open()))
    # top-k is capped by each task's class count, and the columns say so
    assert {"verb_pred_name", "noun_pred_name", "verb_top3_names", "noun_top4_names", "noun_target_name"} <= set(
        preds[0]
    )
    assert preds[0]["path"] == ""  # the loader gave no paths
    for i, row in enumerate(preds):
        assert row["verb_pred_name"] == verbs[int(res.probs["verb"][i].argmax())]
        assert row["noun_pred_name"] == nouns[int(res.probs["noun"][i].argmax())]
        assert len(row["verb_top3_names"].split("; ")) == 3 and len(row["noun_top4_names"].split("; ")) == 4
    summary = res.summary()  # 3 verbs and 4 nouns: no top-5 anywhere
    assert "top-5" not in summary and "top-1" in summary and "1 view per video" in summary


def test_the_summary_shows_top_5_only_for_more_than_5_classes():
    logits, targets = toy(n=4, views=2)  # 5 classes
    loader = DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate)
    summary = evaluate(ToyModel(), loader, progress=False).summary()
    assert "top-5" not in summary and "mean class acc." in summary and "2 views per video" in summary
    wide = EvalResult(
        metrics={"top1": 0.5, "top5": 0.75, "mean_class_acc": 0.5},
        tasks=["class"],
        indices=torch.arange(2),
        ids=["a", "b"],
        probs={"class": torch.full((2, 8), 1 / 8)},
        targets={"class": torch.tensor([0, 1])},
    )
    assert "top-1 50.00   top-5 75.00   mean class acc. 50.00" in wide.summary()


def test_confusion_plot_with_many_classes(tmp_path):
    g = torch.Generator().manual_seed(1)
    n, c = 200, 60
    probs = torch.rand(n, c, generator=g).softmax(-1)
    targets = torch.randint(c, (n,), generator=g)
    res = EvalResult(
        metrics={},
        tasks=["noun"],
        indices=torch.arange(n),
        ids=[str(i) for i in range(n)],
        probs={"noun": probs},
        targets={"noun": targets},
    )
    path = res.plot_confusion(tmp_path / "cm.png", "noun", top_n=12)
    assert path.stat().st_size > 1000
    rows = res.per_class("noun")
    assert len(rows) == c and rows[0]["task"] == "noun"


def test_confusion_plot_needs_neither_pyplot_nor_a_backend_switch(tmp_path):
    script = f"""
import sys, matplotlib, torch
from ca2st.engine.results import EvalResult
res = EvalResult(metrics={{}}, tasks=["class"], indices=torch.arange(4), ids=list("abcd"),
                 probs={{"class": torch.eye(4)}}, targets={{"class": torch.tensor([0, 1, 2, 2])}})
res.plot_confusion({str(tmp_path / "cm.png")!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert matplotlib.rcParams["backend"] == "Template", matplotlib.rcParams["backend"]
"""
    env = {**os.environ, "MPLBACKEND": "Template"}  # a switch to Agg would show
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_exclusion_is_reported_once(synthetic_data, caplog):
    from ca2st.data.datasets import Sample, collate
    from ca2st.engine.data import inference_dataset

    from helpers import smoke_model

    model = smoke_model(num_classes=8).eval()
    samples = [Sample("a", str(synthetic_data.root / "videos" / "val_0_000.mp4"), 0), Sample("x", "gone.mp4", 1)]
    loader = DataLoader(inference_dataset(samples, model.input_recipe), batch_size=2, collate_fn=collate)
    with caplog.at_level(logging.WARNING):
        result = evaluate(model, loader, progress=False)
    shown = caplog.text + result.summary()
    assert result.counts["excluded"] == 1 and shown.count("gone.mp4: video file not found") == 1
