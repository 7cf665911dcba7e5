"""engine/config.py: a recipe plus overrides, environment values, and errors that name the key."""

import pytest

from ca2st.engine.config import load_config
from ca2st.errors import ConfigError

from helpers import REPO, SMOKE_RECIPE


def test_overrides_win_over_the_recipe_and_the_defaults_fill_the_rest(monkeypatch, tmp_path):
    monkeypatch.setenv("CA2ST_TEST_DATA", str(tmp_path))
    cfg = load_config(
        SMOKE_RECIPE,
        [
            "optim.lr=0.001",
            "data.train=${CA2ST_TEST_DATA}/train.txt",
            "model.depth=3",
            "data.options={num_classes: 3}",
            "optim.betas=[0.9, 0.95]",
        ],
    )
    assert cfg.optim.lr == 0.001 and cfg.optim.epochs == 2  # overridden; from the recipe
    assert cfg.optim.min_lr == 1e-6 and cfg.data.test_clips is None  # neither: the defaults
    assert cfg.data.train == f"{tmp_path}/train.txt"
    assert cfg.model == {
        "name": "cast_b16",
        "embed_dim": 32,
        "depth": 3,
        "num_heads": 2,
        "num_frames": 8,
        "img_size": 32,
        "audio_frames": 96,
    }
    assert cfg.data.options == {"num_classes": 3} and cfg.optim.betas == (0.9, 0.95)
    with pytest.raises(ConfigError, match="needs the environment variable CA2ST_UNSET"):
        load_config(SMOKE_RECIPE, ["data.root=${CA2ST_UNSET}"])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key optim.learning_rate"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="config key optim.epochs must be a number"):
        load_config(None, ["optim.epochs=many"])
    with pytest.raises(ConfigError, match=r"unknown model option\(s\) \['depht'\]"):
        load_config(None, ["model.depht=3"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_recipe_names_dict_overrides_and_exponents(tmp_path):
    from ca2st.engine.config import list_recipes

    assert {"smoke", "cast_ek100", "cast_ssv2"} <= set(list_recipes())
    by_name = load_config("smoke", {"data.batch_size": 3, "optim.lr": 5e-4, "model.depth": 1})
    by_path = load_config(REPO / "configs" / "smoke.yaml", ["data.batch_size=3", "optim.lr=5e-4", "model.depth=1"])
    assert by_name == by_path and by_name.optim.lr == 5e-4 and by_name.data.batch_size == 3
    (tmp_path / "r.yaml").write_text("optim:\n  lr: 5e-4\n")
    assert load_config(tmp_path / "r.yaml").optim.lr == 5e-4
    assert by_name.with_overrides(["seed=7"]).seed == 7 and by_name.seed == 0
    with pytest.raises(ConfigError, match="no such config file, nor a recipe of that name"):
        load_config("cast_ek1000")
