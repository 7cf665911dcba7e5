"""The benchmark's measuring functions on a tiny model (speed itself lives in benchmarks/, never in tests)."""

import pytest
import torch

from ca2st import bench

from helpers import tiny_overrides


@pytest.mark.parametrize("precision,checkpointing", [("fp32", False), ("bf16", True)])
def test_train_step_stats_reports_latency_and_peak_memory(precision, checkpointing, monkeypatch):
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: False)  # a process-wide setting: not in pytest
    stats = bench.train_step_stats("cast_b16", 1, precision, checkpointing, steps=1, device="cpu", **tiny_overrides())
    assert stats["precision"] == precision and stats["checkpointing"] is checkpointing
    assert stats["step_s"] > 0 and stats["peak_gib"] > 0.05  # ru_maxrss of this process, in GiB


def test_ceiling_and_table():
    ceiling = bench.matmul_ceiling(torch.float32, "cpu", size=256, runs=2)
    assert ceiling > 0.1  # GFLOP/s
    result = {
        "model": "cast_b16",
        "batch": 8,
        "device": "cpu",
        "machine": "x",
        "threads": 2,
        "torch": "t",
        "compile": "forward",
        "gflop": 781.0,
        "ceiling_gflops": {"fp32": 170.0, "bf16": 700.0},
        "forward": {"bf16": {"min_s": 1.5, "median_s": 1.6, "gflops": 520.7, "ratio_to_ceiling": 0.744}},
        "train": {"bf16_ckpt": {"step_s": 4.5, "ratio_to_forward": 3.0, "peak_gib": 2.1}},
    }
    table = bench.format_table(result)
    assert "74.4%" in table and "bf16_ckpt" in table and "3.00" in table
    forward, step = (line.split() for line in table.splitlines() if line.startswith(("bf16 ", "bf16_ckpt")))
    assert forward[3] == "5.3" and step[3] == "1.8"  # clips/s: 8 clips in 1.5 s and in 4.5 s
