"""ca2st.precision: the TF32 policy (set inside train, eval and predict, undone afterwards; ``--exact-fp32`` keeps
IEEE fp32) and the autocast helper."""

import json

import pytest
import torch

from ca2st.errors import ConfigError
from ca2st.precision import autocast, fp32_matmul_policy, low_precision_dtype

from helpers import SMOKE_RECIPE, smoke_overrides


def fp32_modes() -> tuple[str, str]:
    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


def test_the_policy_holds_inside_its_block_and_is_undone_after():
    before = fp32_modes()
    with fp32_matmul_policy():
        assert fp32_modes() == ("tf32", "tf32")
    with pytest.raises(RuntimeError), fp32_matmul_policy(exact=True):
        assert fp32_modes() == ("ieee", "ieee")
        raise RuntimeError("a failing run")
    assert fp32_modes() == before


def test_autocast_names():
    assert low_precision_dtype("fp32") is None and low_precision_dtype("fp16") is torch.float16
    with autocast("bf16", "cpu"):
        assert torch.get_autocast_dtype("cpu") is torch.bfloat16 and torch.is_autocast_enabled("cpu")
    with autocast("fp32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        autocast("fp8", "cpu")


@pytest.mark.parametrize("flag, expected", [([], ("tf32", "tf32")), (["--exact-fp32"], ("ieee", "ieee"))])
def test_train_and_predict_run_under_the_policy_the_command_line_asks_for(
    synthetic_data, tmp_path, monkeypatch, flag, expected
):
    from ca2st import cli
    from ca2st.engine import inference, train

    seen, before = [], fp32_modes()
    real_train, real_views = train._train, inference.run_views
    monkeypatch.setattr(train, "_train", lambda *a: seen.append(fp32_modes()) or real_train(*a))
    monkeypatch.setattr(inference, "run_views", lambda *a, **k: seen.append(fp32_modes()) or real_views(*a, **k))
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: True)
    out = tmp_path / "run"
    overrides = smoke_overrides(out, "optim.epochs=1", data=synthetic_data)
    assert cli.main(["train", str(SMOKE_RECIPE), *overrides, *flag]) == 0
    assert json.loads((out / "run_config.json").read_text())["exact_fp32"] == bool(flag)
    video = next(synthetic_data.root.rglob("*.mp4"))
    checkpoint = next(out.glob("checkpoint-0*"))
    assert cli.main(["predict", str(video), "--checkpoint", str(checkpoint), "-q", *flag]) == 0
    assert seen == [expected, expected]
    assert fp32_modes() == before  # undone after each command
