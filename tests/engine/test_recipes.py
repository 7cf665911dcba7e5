"""Every recipe in configs/ loads, builds its model on the meta device and names a known data format."""

from pathlib import Path

import pytest
import torch

from ca2st.data.datasets import FORMATS
from ca2st.engine.config import load_config
from ca2st.models import MultiExpertModel

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
SMOKE = "smoke"  # configs/smoke.yaml: the tiny CPU recipe the tests train with, not a model-zoo row


def test_there_is_a_recipe_per_model_zoo_row():
    names = {p.stem for p in CONFIGS} - {SMOKE}
    assert {"cast_ek100", "cast_ssv2", "cast_k400", "cast_r50_ek100", "transfer_ek100_to_hd_epic"} <= names
    for ds in ("epic_sounds", "vggsound", "kinetics_sound", "ucf101"):
        assert {f"cast_{ds}", f"cava_{ds}", f"ca2st_{ds}"} <= names
    for m in ("cast", "cava", "ca2st"):
        assert f"transfer_{m}_epic_sounds_to_hd_epic_sounds" in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_loads_and_builds(path):
    cfg = load_config(path)
    name, model_cfg = cfg.model_config()
    assert cfg.data.format in FORMATS
    with torch.device("meta"):
        model = MultiExpertModel(model_cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if path.stem == SMOKE:  # tiny by design, so that a step runs in seconds on a CPU
        assert trainable < 1e6 and cfg.random_experts and cfg.precision == "fp32"
        return
    assert trainable > 1e6
    if path.stem.startswith("cast_") and "r50" not in path.stem:
        assert model_cfg.depth == 12 and model_cfg.embed_dim == 768 and cfg.optim.layer_decay == 0.75
    if "vggsound" in path.stem and "audio" in model_cfg.experts:
        assert model_cfg.audio_frames == 1024
