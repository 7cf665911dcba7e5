"""Our checkpoint format: the model record (tasks, class names, input recipe) and load_any."""

import json

import pytest
import torch

import ca2st
from ca2st.checkpoints.ca2st import is_model_folder, read_record
from ca2st.data.recipe import InputRecipe
from ca2st.errors import CheckpointError, ConfigError

from helpers import randomize_, tiny_overrides


def composition_model():
    model = ca2st.build_model("cast_b16_ek100", **tiny_overrides(composition_classes={"verb": 3, "noun": 4}))
    return randomize_(model).eval()


def test_class_names_and_input_recipe_round_trip(tmp_path):
    model = composition_model()
    names = {"verb": ["take", "put", "open"], "noun": ["cup", "pan", "tap", "lid"]}
    model.class_names = names
    model.input_recipe = model.input_recipe.replace(
        sampler="segment", test_clips=2, test_crops=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )
    path = ca2st.save_model(model, tmp_path / "m")
    record = json.loads((path / "config.json").read_text())
    assert record["tasks"] == {"verb": 3, "noun": 4} and record["class_names"] == names
    assert record["input"]["sampler"] == "segment" and record["input"]["test_crops"] == 3
    loaded = ca2st.load_model(path)
    assert loaded.tasks == {"verb": 3, "noun": 4} and loaded.class_names == names
    assert loaded.input_recipe == model.input_recipe and loaded.label("noun", 2) == "tap"
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        for task, logits in model(video).items():
            torch.testing.assert_close(loaded(video)[task], logits)


def test_record_defaults_and_a_version_1_folder(tmp_path):
    model = randomize_(ca2st.build_model("cast_b16", **tiny_overrides()))
    assert model.tasks == {"class": 7} and model.class_names is None and model.label("class", 3) == "3"
    assert model.input_recipe == InputRecipe(num_frames=4, img_size=32)
    path = ca2st.save_model(model, tmp_path / "old")
    record = json.loads((path / "config.json").read_text())
    for key in ("tasks", "class_names", "input", "format", "format_version"):  # what format version 1 lacked
        del record[key]
    record["model"]["grad_checkpointing"] = False
    (path / "config.json").write_text(json.dumps(record))
    loaded = ca2st.load_model(path)
    assert loaded.class_names is None and loaded.input_recipe == model.input_recipe


def test_class_names_are_checked_against_the_tasks():
    model = composition_model()
    with pytest.raises(ConfigError, match="3 names for 'noun' but the model has 4 classes"):
        model.class_names = {"verb": ["a", "b", "c"], "noun": ["a", "b", "c"]}
    with pytest.raises(ConfigError, match="give names per task"):
        model.class_names = ["a", "b", "c"]
    single = ca2st.build_model("cast_b16", **tiny_overrides())
    single.class_names = [f"c{i}" for i in range(7)]
    assert single.class_names == {"class": [f"c{i}" for i in range(7)]}
    with pytest.raises(ConfigError, match="input recipe: sampler must be one of"):
        single.input_recipe.replace(sampler="uniform")


def test_broken_folders_name_the_file(tmp_path):
    path = ca2st.save_model(ca2st.build_model("cast_b16", **tiny_overrides()), tmp_path / "m")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"m/config.json: not valid JSON"):
        ca2st.load_model(path)
    path = ca2st.save_model(ca2st.build_model("cast_b16", **tiny_overrides()), tmp_path / "n")
    (path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match=r"n/model.safetensors: not a readable safetensors file"):
        ca2st.load_model(path)
    with pytest.raises(CheckpointError, match="not a ca2st checkpoint folder"):
        read_record(tmp_path)


def test_load_any_reads_our_folders_and_official_files(tmp_path, fixtures_dir):
    ours = randomize_(ca2st.build_model("cast_b16", **tiny_overrides()))
    ours.class_names = [str(i * 10) for i in range(7)]
    folder = ca2st.save_model(ours, tmp_path / "ours")
    assert is_model_folder(folder)
    loaded = ca2st.load_any(folder)
    assert loaded.class_names == ours.class_names and not loaded.training
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video), ours(video))

    fixture = torch.load(fixtures_dir / "cast_official_tiny_a.pt", map_location="cpu", weights_only=True)
    official = tmp_path / "official.pth"
    torch.save(fixture["checkpoint"], official)
    assert not is_model_folder(official)
    model = ca2st.load_any(official, num_heads=fixture["config"]["num_heads"])
    with torch.no_grad():
        torch.testing.assert_close(model(fixture["input"]), fixture["output"], atol=1e-5, rtol=0)
    assert model.tasks == {"class": 10} and model.class_names is None
