"""engine/run_model.py: the run's model takes its class counts from the data and checks the config's against them."""

import logging

import pytest
import torch

from ca2st.data.datasets import Annotations, Sample
from ca2st.engine.run_model import build_run_model
from ca2st.errors import ConfigError

from helpers import smoke_config


def annotations(num_classes, path="train.txt"):
    label = 0 if isinstance(num_classes, int) else {task: 0 for task in num_classes}
    return Annotations([Sample("a", "a.mp4", label)], num_classes, "path_label", path=path, sampler="segment")


def test_the_data_gives_the_class_count_and_a_smaller_config_count_is_an_error(tmp_path):
    _, model = build_run_model(smoke_config(tmp_path), annotations(5), torch.device("cpu"))
    assert model.config.num_classes == 5
    with pytest.raises(ConfigError, match=r"model.num_classes=3 is smaller than the 5 classes of train.txt"):
        build_run_model(smoke_config(tmp_path, "model.num_classes=3"), annotations(5), torch.device("cpu"))


def test_a_larger_config_count_trains_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ca2st"):
        _, model = build_run_model(smoke_config(tmp_path, "model.num_classes=7"), annotations(5), torch.device("cpu"))
    assert model.config.num_classes == 7
    warnings = [r.getMessage() for r in caplog.records if "model.num_classes" in r.getMessage()]
    assert warnings == [
        "config key model.num_classes=7 is larger than the 5 classes of train.txt: classes 5..6 never get a positive "
        "target"
    ]


def test_composition_class_counts_are_checked_per_task(tmp_path, caplog):
    data = annotations({"verb": 4, "noun": 6}, path="ek.csv")
    run = smoke_config(tmp_path, "model.composition=true")
    _, model = build_run_model(run, data, torch.device("cpu"))
    assert model.config.composition_classes == {"verb": 4, "noun": 6}
    small = smoke_config(tmp_path, "model.composition=true", "model.composition_classes={verb: 4, noun: 5}")
    with pytest.raises(ConfigError, match="model.composition_classes.noun=5 is smaller than the 6 classes of ek.csv"):
        build_run_model(small, data, torch.device("cpu"))
    large = smoke_config(tmp_path, "model.composition=true", "model.composition_classes={verb: 9, noun: 6}")
    with caplog.at_level(logging.WARNING, logger="ca2st"):
        build_run_model(large, data, torch.device("cpu"))
    assert "model.composition_classes.verb=9 is larger than the 4 classes of ek.csv" in caplog.text
