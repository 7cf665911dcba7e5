"""``ca2st report``: the balanced table over any runs, rows named by run, columns by dataset."""

import csv
import json

import pytest
from eval_toys import make_video

import ca2st
from ca2st import metrics as M
from ca2st.cli import main
from ca2st.data.datasets import dataset_name
from ca2st.engine import runner
from ca2st.engine.config import load_config
from ca2st.engine.report import report
from ca2st.errors import ConfigError


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_report_balanced_table(tmp_path):
    ek = {
        "dataset": "EK100",
        "model": "CAST",
        "metrics": {"verb_top1": 0.725, "noun_top1": 0.609, "action_top1": 0.493, "verb_top5": 0.9},
    }
    path = _write(tmp_path / "ssv2" / "results.json", {"model": "CAST", "metrics": {"top1": 0.716, "top5": 0.93}})
    k400 = {"metrics": {"top1": 85.3}, "metric_scale": "percent"}
    clip = [
        {"metrics": {"verb_top1": 0.549, "noun_top1": 0.527, "action_top1": 0.338}},
        {"metrics": {"top1": 0.478}},
        {"metrics": {"top1": 0.789}},
    ]
    table = report([ek, path, k400] + clip, columns=["EK100", "SSV2", "K400"] * 2, rows=["CAST"] * 3 + ["CLIP*"] * 3)
    assert table.columns == ["EK100 verb", "EK100 noun", "EK100 action", "SSV2", "K400"]
    assert table.hm_columns == ["EK100 verb", "EK100 noun", "SSV2", "K400"]
    recs = table.records()
    assert recs[0] == ["CAST", "72.5", "60.9", "49.3", "71.6", "85.3", "71.6"]  # CAST Table 2
    assert recs[1] == ["CLIP*", "54.9", "52.7", "33.8", "47.8", "78.9", "56.5"]
    md = table.to_markdown()
    assert md.splitlines()[0] == "| Run | EK100 verb | EK100 noun | EK100 action | SSV2 | K400 | H.M. |"
    text = table.to_csv(tmp_path / "table.csv")
    assert (tmp_path / "table.csv").read_text() == text
    assert text.splitlines()[1] == "CAST,72.50,60.90,49.30,71.60,85.30,71.55"
    assert "harmonic mean" in table.summary()
    # columns default to the result's dataset field, then the run folder; a missing column leaves H.M. empty
    partial = report([ek, path])
    assert partial.columns == ["EK100 verb", "EK100 noun", "EK100 action", "ssv2"]
    two = report(
        [
            {"model": "A", "metrics": {"top1": 0.5}},
            {"model": "A", "metrics": {"top1": 0.25}},
            {"model": "B", "metrics": {"top1": 0.4}},
        ],
        columns=["x", "y", "x"],
    )
    assert two.records()[0][-1] == f"{100 * M.harmonic_mean([0.5, 0.25]):.1f}"
    assert two.records()[1] == ["B", "40.0", "–", "–"]
    with pytest.raises(ConfigError):
        report([{"metrics": {}}])
    with pytest.raises(ConfigError):
        report([tmp_path / "nowhere.json"])
    with pytest.raises(ConfigError, match="2 row names for 1 result: give one each"):
        report([ek], rows=["a", "b"])


def test_two_runs_of_one_preset_on_one_dataset(tmp_path):
    # results.json written with a run field: rows are the runs
    a = _write(
        tmp_path / "new" / "a.json",
        {"run": "cast_lr1", "model": "cast_b16", "dataset": "K400", "metrics": {"top1": 0.5}},
    )
    b = _write(
        tmp_path / "new" / "b.json",
        {"run": "cast_lr2", "model": "cast_b16", "dataset": "K400", "metrics": {"top1": 0.6}},
    )
    assert report([a, b]).records() == [["cast_lr1", "50.0", "50.0"], ["cast_lr2", "60.0", "60.0"]]
    # older files without a run field: the model names clash on K400, so every result of that model is named by
    # its run folder (the folder above the default 'eval' folder, else the folder holding results.json)
    old = [
        _write(tmp_path / folder / "results.json", {"model": "cast_b16", "dataset": ds, "metrics": {"top1": v}})
        for folder, ds, v in (("seed0/eval", "K400", 0.5), ("seed1/eval", "K400", 0.7), ("seed1_ssv2", "SSV2", 0.4))
    ]
    table = report(old + [{"model": "other", "dataset": "K400", "metrics": {"top1": 0.1}}])
    assert table.rows == [
        ("seed0", {"K400": 0.5}),
        ("seed1", {"K400": 0.7}),
        ("seed1_ssv2", {"SSV2": 0.4}),
        ("other", {"K400": 0.1}),
    ]
    # without a clash, one model's results on several datasets stay one row
    assert report(old[1:]).rows == [("cast_b16", {"K400": 0.7, "SSV2": 0.4})]
    # the same run folder name twice: told apart by position
    dicts = report(
        [{"model": "m", "metrics": {"top1": 0.5}}, {"model": "m", "metrics": {"top1": 0.6}}], columns=["K400", "K400"]
    )
    assert [name for name, _ in dicts.rows] == ["m #1", "m #2"]
    # rows given twice for one cell are an error, not a guess
    with pytest.raises(ConfigError, match="two results for row 'x'"):
        report([a, b], rows=["x", "x"])


def test_report_cli_rows_and_columns(tmp_path, capsys):
    a = _write(
        tmp_path / "a" / "results.json",
        {"model": "cast_b16", "dataset": "ek.csv", "metrics": {"verb_top1": 0.6, "noun_top1": 0.5, "action_top1": 0.4}},
    )
    b = _write(tmp_path / "b" / "results.json", {"model": "cast_b16", "dataset": "k400.csv", "metrics": {"top1": 0.8}})
    out = tmp_path / "table.csv"
    assert (
        main(["report", str(a), str(b), "--rows", "mine", "mine", "--columns", "EK100", "K400", "--out", str(out)]) == 0
    )
    assert "H.M." in capsys.readouterr().out
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["Run", "EK100 verb", "EK100 noun", "EK100 action", "K400", "H.M."]
    assert rows[1][:5] == ["mine", "60.00", "50.00", "40.00", "80.00"] and len(rows) == 2
    assert main(["report", str(a), str(b), "--names", "EK", "K", "--out", str(out)]) == 0  # --names: columns
    rows = list(csv.reader(out.open()))
    assert rows[0][1] == "EK verb" and rows[0][4] == "K" and rows[1][0] == "cast_b16"
    assert main(["report", str(a), "--rows", "x", "y"]) == 2  # a ConfigError, reported
    assert "2 row names for 1 result: give one each" in capsys.readouterr().err


def test_dataset_names_from_the_format():
    expected = {
        "epic100": "EK100",
        "cast_ek100": "EK100",
        "ssv2": "SSV2",
        "cast_ssv2": "SSV2",
        "kinetics": "K400",
        "cast_k400": "K400",
        "ucf101": "UCF-101",
        "vggsound": "VGG-Sound",
        "kinetics_sound": "KineticsSound",
        "epic_sounds": "EPIC-SOUNDS",
        "hd_epic": "HD-EPIC",
        "hd_epic_sounds": "HD-EPIC-SOUNDS",
        "activitynet": "ActivityNet",
    }
    for fmt, name in expected.items():
        assert dataset_name(fmt, "/data/ann/val.csv") == name
    assert dataset_name("path_label", "/data/ann/my_val.txt") == "my_val"
    assert dataset_name(None, "lists/test.csv") == "test"


def test_run_eval_records_dataset_and_run_names_for_the_report(tmp_path, monkeypatch):
    for i in range(2):
        make_video(tmp_path / f"v{i}.mp4")
    (tmp_path / "val.csv").write_text("v0.mp4 3\nv1.mp4 7\n")
    model = ca2st.build_model(
        "cast_b16", embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32, num_classes=400
    )
    monkeypatch.setattr(runner, "load_for_eval", lambda cfg, device: (model, None))
    files = []
    for run in ("k400_a", "k400_b"):
        cfg = load_config(
            None,
            [
                f"data.val={tmp_path / 'val.csv'}",
                f"data.root={tmp_path}",
                "data.format=cast_k400",
                "data.num_workers=0",
                "data.test_clips=1",
                "data.batch_size=2",
                "model.num_frames=4",
                f"output_dir={tmp_path / 'runs' / run}",
                "precision=fp32",
                "progress=false",
                "device=cpu",
            ],
        )
        result, written = runner.run_eval(cfg)
        assert (result.dataset, result.run, result.model) == ("K400", run, "cast_b16")
        files.append(written["results"])
    saved = json.loads(files[0].read_text())
    assert saved["dataset"] == "K400" and saved["run"] == "k400_a"
    preds = list(csv.DictReader((files[0].parent / "predictions.csv").open()))
    assert [p["path"] for p in preds] == [str(tmp_path / "v0.mp4"), str(tmp_path / "v1.mp4")]
    table = report(files)
    assert table.columns == ["K400"] and [name for name, _ in table.rows] == ["k400_a", "k400_b"]
