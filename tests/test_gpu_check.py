"""benchmarks/gpu_check.sh in its CPU mode, as CI runs it: every check that needs no GPU passes, the rest are
skipped with the reason."""

import os
import subprocess
import sys

from helpers import REPO


def test_the_gpu_check_passes_on_the_cpu():
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=900,
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    status = {line.split()[1]: line.split()[0] for line in lines if line.split()[:1] in (["PASS"], ["SKIP"], ["FAIL"])}
    cpu_checks = ["train-fp32", "train-bf16", "train-fp16", "resume-exact", "eval-predict", "two-ranks-one-gpu"]
    assert status == {
        **{name: "PASS" for name in cpu_checks},
        **{name: "SKIP" for name in ("nccl-two-gpus", "sdpa-fused", "bench-cast_b16")},
    }, out.stdout
