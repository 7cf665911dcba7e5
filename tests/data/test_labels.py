"""Class-name files: text, JSON, CSV (EPIC's *_classes.csv) and per-task folders."""

import json

import pytest

from ca2st.data.labels import load_labels
from ca2st.errors import ConfigError


def test_load_labels(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["x", "y"]))
    (tmp_path / "b.json").write_text(json.dumps({"1": "y", "0": "x"}))
    (tmp_path / "c.json").write_text(json.dumps({"y": 1, "x": 0}))
    (tmp_path / "d.csv").write_text("id,key,instances\n1,y,4\n0,x,9\n")
    (tmp_path / "e.txt").write_text("x\ny\n")
    for name in ("a.json", "b.json", "c.json", "d.csv", "e.txt"):
        assert load_labels(tmp_path / name, {"class": 2}) == {"class": ["x", "y"]}, name
    comp = {"verb": ["take", "put"], "noun": ["cup"]}
    (tmp_path / "comp.json").write_text(json.dumps(comp))
    assert load_labels(tmp_path / "comp.json", {"verb": 2, "noun": 1}) == comp
    folder = tmp_path / "epic"
    folder.mkdir()
    (folder / "EPIC_100_verb_classes.csv").write_text("id,key\n0,take\n1,put\n")
    (folder / "EPIC_100_noun_classes.csv").write_text("id,key\n0,cup\n")
    assert load_labels(folder, {"verb": 2, "noun": 1}) == comp
    with pytest.raises(ConfigError, match="3 classes"):
        load_labels(tmp_path / "a.json", {"class": 3})
    with pytest.raises(ConfigError, match="not found"):
        load_labels(tmp_path / "none.txt")
    (tmp_path / "gap.json").write_text(json.dumps({"0": "x", "2": "z"}))
    with pytest.raises(ConfigError, match="gaps"):
        load_labels(tmp_path / "gap.json")


def test_unreadable_label_files_name_the_file(tmp_path):
    from ca2st.errors import DataError

    (tmp_path / "latin1.txt").write_bytes("café\nthé\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:1: not UTF-8 text"):
        load_labels(tmp_path / "latin1.txt")
