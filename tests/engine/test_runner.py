"""engine/runner.py: `ca2st eval` — the checkpoint's recipe, and the precision it evaluates in."""

import pytest
import torch

from ca2st.engine import runner
from ca2st.engine.config import load_config
from ca2st.engine.train import train

from helpers import smoke_config


@pytest.mark.parametrize("eval_precision, expected", [("auto", "fp32"), ("bf16", "bf16"), ("fp32", "fp32")])
def test_eval_runs_fp32_on_cpu_unless_told(synthetic_data, tmp_path, monkeypatch, eval_precision, expected):
    result = train(smoke_config(tmp_path / "run", "optim.epochs=1", data=synthetic_data))
    seen = {}
    real = runner.evaluate

    def spy(model, loader, *, precision, **kw):
        linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.numel())
        seen.update(precision=precision, dtype=linear.weight.dtype)
        return real(model, loader, precision=precision, **kw)

    monkeypatch.setattr(runner, "evaluate", spy)
    cfg = smoke_config(
        tmp_path / "eval", f"data.val={synthetic_data.files['val']}", f"checkpoint={result.last_checkpoint}",
        "precision=bf16", f"eval_precision={eval_precision}", data=synthetic_data,
    )  # fmt: skip
    runner.run_eval(cfg, tmp_path / "out")
    assert seen["precision"] == expected  # the recipe's training precision (bf16) does not decide
    assert seen["dtype"] == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_auto_is_the_official_fp16_on_gpu():
    cfg = load_config("smoke")
    assert runner.evaluation_precision(cfg, torch.device("cuda", 0)) == "fp16"
    assert runner.evaluation_precision(cfg, torch.device("cpu")) == "fp32"
