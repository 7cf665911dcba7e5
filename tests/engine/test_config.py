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


BAD_VALUES = [
    ("output_dir=5", "config key output_dir must be a string, got 5"),
    ("output_dir=[a, b]", "config key output_dir must be a string"),
    ("seed=-1", "config key seed must be at least 0"),
    ("device=tpu", "config key device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("device=cuda:x", "config key device must be auto"),
    ("precision=fp8", "config key precision must be fp32, bf16 or fp16, got 'fp8'"),
    ("resume=true", "config key resume must be a string"),
    ("eval_every=-1", "config key eval_every must be at least 0"),
    ("keep_checkpoints=1.5", "config key keep_checkpoints must be an integer"),
    ("log_every=0", "config key log_every must be at least 1"),
    ("progress=yes please", "config key progress must be true or false"),
    ("experts={spatial: 3}", "config key experts must be a mapping of expert kind to a weight file path"),
    ("model=cast_b16", "config key model must be a mapping"),
    ("data.batch_size=0", "config key data.batch_size must be at least 1, got 0"),
    ("data.eval_batch_size=-2", "config key data.eval_batch_size must be at least 1"),
    ("data.num_workers=-1", "config key data.num_workers must be at least 0"),
    ("data.sampler=random", "config key data.sampler must be segment or dense"),
    ("data.sampling_rate=0", "config key data.sampling_rate must be at least 1"),
    ("data.test_crops=0", "config key data.test_crops must be at least 1"),
    ("data.crop_scale=[0.5, 0.1]", r"config key data.crop_scale must be a list of values each in \(0, 1\]"),
    ("data.crop_scale=[0, 1, 2]", "config key data.crop_scale must be a list of 2 values"),
    ("data.erase_prob=1.5", r"config key data.erase_prob must be in \[0, 1\]"),
    ("data.on_error=exclude", "config key data.on_error must be error or skip"),
    ("data.missing_audio=zeros", "config key data.missing_audio must be error or silence"),
    ("data.audio_window=file", "config key data.audio_window must be sample or clip"),
    ("data.root=7", "config key data.root must be a string"),
    ("data.options=[1]", "config key data.options must be a mapping"),
    ("data.flip=1", "config key data.flip must be true or false"),
    ("optim.lr=nan", "config key optim.lr must be a finite number, got nan"),
    ("optim.lr=.inf", "config key optim.lr must be a finite number"),
    ("optim.lr=-1e-3", "config key optim.lr must be at least 0"),
    ("optim.betas=0.9", "config key optim.betas must be a list of 2 values, got 0.9"),
    ("optim.betas=[0.9, 1.0]", r"config key optim.betas must be a list of values each in \[0, 1\)"),
    ("optim.betas=[0.9, x]", "config key optim.betas must be a number"),
    ("optim.eps=0", "config key optim.eps must be greater than 0"),
    ("optim.epochs=-3", "config key optim.epochs must be at least 1, got -3"),
    ("optim.epochs=2.5", "config key optim.epochs must be an integer"),
    ("optim.update_freq=0", "config key optim.update_freq must be at least 1"),
    ("optim.layer_decay=0", r"config key optim.layer_decay must be in \(0, 1\]"),
    ("optim.clip_grad=0", "config key optim.clip_grad must be greater than 0"),
    ("optim.label_smoothing=1", r"config key optim.label_smoothing must be in \[0, 1\)"),
    ("optim.mixup_prob=2", r"config key optim.mixup_prob must be in \[0, 1\]"),
    ("optim.ema=1", r"config key optim.ema must be in \(0, 1\)"),
    ("optim.warmup_epochs=inf", "config key optim.warmup_epochs must be a finite number"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_values_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_every_key_has_a_rule_and_valid_values_pass():
    from ca2st.engine.config import config_keys
    from ca2st.engine.config_rules import RULES

    options = {"model", "data.options", "data.train_options", "data.val_options"}  # checked by their users
    checked_by_type = {k for k, hint in config_keys().items() if hint in (bool, bool | None)} | options
    assert set(RULES) == set(config_keys()) - checked_by_type  # a new field needs its rule
    cfg = load_config(
        None,
        ["device=cuda:1", "optim.betas=[0.5, 0.99]", "data.sampler=dense", "optim.ema=0.999", "optim.lr=1e-3"],
    )
    assert cfg.device == "cuda:1" and cfg.optim.betas == (0.5, 0.99) and cfg.data.crop_scale == (0.08, 1.0)


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="a folder, not a config file"):
        load_config(tmp_path)
