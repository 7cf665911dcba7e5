"""Model speed and memory, measured as ratios within one run (``ca2st bench``, ``benchmarks/bench_model.py``).

In one process: the fp32 and bf16 matmul ceilings (the best 4096³ ``torch.mm`` of runs before and
after each timing of the forwards), the forward latency of a preset, eager and ``torch.compile``d
(min and median after warm-up, under ``inference_mode``), its FLOPs and the achieved fraction of the
ceiling. Then, each in a fresh subprocess so that peak memory is its own: one training step's latency
and peak memory, with and without activation checkpointing, as ratios to the forward of the same
precision. The forwards those ratios divide by are timed again after the steps (the best of both
runs), since this class of machine slows down and speeds up from one minute to the next.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

from .engine.host_memory import keep_freed_memory
from .models import build_model
from .models.summary import count_flops, example_inputs
from .precision import autocast

PRECISIONS = ("fp32", "bf16")  # the precisions measured by default
log = logging.getLogger(__name__)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], runs: int, warmup: int, device: str) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_ceiling(dtype: torch.dtype, device: str, size: int = 4096, runs: int = 5) -> float:
    """GFLOP/s of the best of ``runs`` ``size³`` matrix products."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = min(timed(lambda: torch.mm(a, b), runs, 1, device))
    return 2 * size**3 / best / 1e9


def forward_latency(model, inputs: dict, precision: str, runs: int, device: str) -> list[float]:
    def run():
        with torch.inference_mode(), autocast(precision, device):
            model(**inputs)

    return timed(run, runs, 2, device)


def train_step_stats(
    name: str,
    batch: int,
    precision: str,
    checkpointing: bool,
    steps: int,
    device: str,
    compile_model: bool = False,
    **overrides,
) -> dict:
    """One training step (forward, cross-entropy, backward, AdamW) of a fresh model: best latency and peak memory.

    On CPU with glibc's allocator thresholds fixed, as ``ca2st train`` does (:mod:`ca2st.engine.host_memory`).
    """
    if device == "cpu":
        keep_freed_memory()
    torch.manual_seed(0)
    model = build_model(name, **overrides).to(device).train()
    model.set_grad_checkpointing(checkpointing)
    if precision == "bf16":
        model.cast_matmul_weights_(torch.bfloat16)
    inputs = example_inputs(model, batch, device)
    inputs = {k: torch.randn_like(v) for k, v in inputs.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    forward = torch.compile(model) if compile_model else model
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        with autocast(precision, device):
            out = forward(**inputs)
        logits = out if isinstance(out, torch.Tensor) else torch.cat(list(out.values()), dim=1)
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.zeros(batch, dtype=torch.long, device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = timed(step, steps, 2, device)  # the first two steps grow the heap (page faults, ~1 s of system time)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"step_s": min(times), "peak_gib": peak, "precision": precision, "checkpointing": checkpointing}


def _subprocess_step(args, precision: str, checkpointing: bool) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "ca2st",
        "bench",
        "--train-step-only",
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--precision",
        precision,
        "--steps",
        str(args.steps),
        "--device",
        args.device,
    ]
    if checkpointing:
        cmd.append("--checkpointing")
    if args.exact_fp32:
        cmd.append("--exact-fp32")
    if args.compile == "all":
        cmd.extend(["--compile", "all"])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"training-step subprocess failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _forward_times(args, compile_model: bool, runs: int) -> dict[str, list[float]]:
    """Forward latencies of a fresh model by precision (and `` compiled``), as ``ca2st eval`` runs it."""
    device = args.device
    model = build_model(args.model).to(device).eval()
    torch.manual_seed(0)
    inputs = {k: torch.randn_like(v) for k, v in example_inputs(model, args.batch, device).items()}
    modes = {"": model}
    if compile_model:
        modes[" compiled"] = torch.compile(model)
    times = {}
    for precision in args.precisions:
        if precision == "bf16":
            model.cast_matmul_weights_(torch.bfloat16, trainable=True)  # as ca2st eval and predict do
        for suffix, forward in modes.items():
            try:
                times[precision + suffix] = forward_latency(forward, inputs, precision, runs, device)
            except Exception as e:  # torch.compile needs a C++ compiler (CPU) or Triton (GPU)
                if not suffix:
                    raise
                log.warning(
                    "%s%s forward not measured (%s: %s)",
                    precision,
                    suffix,
                    type(e).__name__,
                    str(e).splitlines()[0][:200],
                )
    return times


def run(args) -> dict:
    device = args.device
    result = {
        "model": args.model,
        "batch": args.batch,
        "device": device,
        "machine": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "compile": args.compile,
        "fp32_matmul": "ieee" if args.exact_fp32 else "tf32",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    def best_ceilings(so_far: dict[str, float]) -> dict[str, float]:
        return {p: max(so_far.get(p, 0.0), matmul_ceiling(dtype, device)) for p, dtype in dtypes.items()}

    ceilings = best_ceilings({})  # the fp32 ceiling is TF32's on a GPU unless --exact-fp32
    with torch.device("meta"):
        meta = build_model(args.model)
    flops = count_flops(meta, args.batch)
    result["gflop"] = flops / 1e9
    times = _forward_times(args, args.compile != "none", args.runs)
    # the ceilings again after each timing of the forwards: the best counts, so that a slow moment
    # inflates no ratio
    ceilings = best_ceilings(ceilings)
    result["train"] = {}
    if not args.skip_train:
        suffix = " compiled" if args.compile == "all" else ""
        for precision in args.precisions:
            for ckpt in (False, True):
                key = f"{precision}{'_ckpt' if ckpt else ''}{suffix}"
                result["train"][key] = _subprocess_step(args, precision, ckpt)
        # the forwards the steps are compared with, again after the steps (best of both, as the ceilings)
        for key, again in _forward_times(args, args.compile == "all", max(5, args.runs // 2)).items():
            times[key] = times.get(key, []) + again
        ceilings = best_ceilings(ceilings)
        for stats in result["train"].values():
            stats["ratio_to_forward"] = stats["step_s"] / min(times[stats["precision"] + suffix])
    result["ceiling_gflops"] = ceilings
    result["forward"] = {
        key: {
            "min_s": min(t),
            "median_s": statistics.median(t),
            "gflops": flops / min(t) / 1e9,
            "ratio_to_ceiling": flops / min(t) / 1e9 / ceilings[key.split()[0]],
        }
        for key, t in times.items()
    }
    return result


def format_table(r: dict) -> str:
    lines = [
        f"{r['model']} batch {r['batch']} on {r['device']} ({r['machine']}, {r['threads']} threads, "
        f"torch {r['torch']}) — {r['gflop']:.1f} GFLOP per forward",
        f"matmul ceiling: fp32 {r['ceiling_gflops']['fp32']:.1f} GFLOP/s, "
        f"bf16 {r['ceiling_gflops']['bf16']:.1f} GFLOP/s",
        f"{'forward':<16}{'min s':>9}{'median s':>10}{'clips/s':>9}{'GFLOP/s':>9}{'of ceiling':>12}",
    ]
    for p, f in r["forward"].items():
        lines.append(
            f"{p:<16}{f['min_s']:>9.3f}{f['median_s']:>10.3f}{r['batch'] / f['min_s']:>9.1f}{f['gflops']:>9.1f}"
            f"{f['ratio_to_ceiling']:>11.1%}"
        )
    if r["train"]:
        lines.append(f"{'train step':<16}{'s':>9}{'x forward':>10}{'clips/s':>9}{'peak GiB':>9}")
        for key, t in r["train"].items():
            lines.append(
                f"{key:<16}{t['step_s']:>9.3f}{t['ratio_to_forward']:>10.2f}{r['batch'] / t['step_s']:>9.1f}"
                f"{t['peak_gib']:>9.2f}"
            )
    return "\n".join(lines)
