"""The GPU readiness checks behind ``benchmarks/gpu_check.sh``: one PASS / FAIL / SKIP line per check.

On a GPU machine every check runs on the GPU (about 5 minutes on one H100-class GPU); with ``--cpu`` (or without a
GPU) the same training, resume, evaluation, prediction and two-rank checks run on the CPU and the GPU-only ones are
skipped. Runs use configs/smoke.yaml on the synthetic dataset, written to a temporary folder; nothing is
downloaded. The exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


class Skip(Exception):
    """A check that does not apply on this machine."""


class Checks:
    def __init__(self, device: str, work: Path):
        from ca2st.data.synthetic import SyntheticSpec, write_dataset

        self.device, self.work = device, work
        self.data = write_dataset(work / "data", SyntheticSpec(per_class_train=1, per_class_val=1, size=32))
        self.root = work / "data"
        self.results: list[tuple[str, str, str]] = []

    # ---------------------------------------------------------------------------------------------- helpers

    def ca2st(self, *args: str, env: dict | None = None, launcher: list[str] | None = None) -> str:
        cmd = [*(launcher or [sys.executable]), "-m", "ca2st", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
        if out.returncode:
            raise AssertionError(f"`{' '.join(cmd[-6:])}` exited {out.returncode}:\n{out.stderr[-2000:]}")
        return out.stdout

    def overrides(self, out: Path, *extra: str) -> list[str]:
        return [
            f"data.train={self.data['train']}",
            f"data.val={self.data['val']}",
            f"data.root={self.root}",
            f"output_dir={out}",
            f"device={self.device}",
            "log_every=1",
            *extra,
        ]

    def train(self, out: Path, *extra: str, launcher: list[str] | None = None, env: dict | None = None) -> list[dict]:
        self.ca2st("train", str(SMOKE), *self.overrides(out, *extra), launcher=launcher, env=env)
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    def run(self, name: str, check) -> None:
        start = time.perf_counter()
        try:
            detail = check() or ""
            status = "PASS"
        except Skip as why:
            status, detail = "SKIP", str(why)
        except Exception as err:  # a failing check is reported, and the others still run
            status = "FAIL"
            detail = f"{type(err).__name__}: {err}".strip()
            if not isinstance(err, AssertionError):
                detail += "\n" + traceback.format_exc(limit=3)
        line = f"{status} {name} ({time.perf_counter() - start:.0f} s){': ' + detail if detail else ''}"
        print(line, flush=True)
        self.results.append((status, name, detail))

    def need_gpu(self, count: int = 1) -> None:
        if self.device != "cuda":
            raise Skip("needs a GPU")
        if torch.cuda.device_count() < count:
            raise Skip(f"needs {count} GPUs, this machine has {torch.cuda.device_count()}")

    # ---------------------------------------------------------------------------------------------- checks

    def training(self, precision: str) -> str:
        out = self.work / f"train-{precision}"
        records = self.train(out, f"precision={precision}", "optim.ema=0.9", "optim.lr=4")
        losses = [r["loss"] for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval"]
        assert len(losses) == 4 and all(x == x and abs(x) != float("inf") for x in losses), f"losses {losses}"
        assert len(evals) == 2, f"expected an evaluation after each of 2 epochs, got {len(evals)}"
        first, last = (load_file(str(d / "model.safetensors")) for d in sorted(out.glob("checkpoint-0*")))
        moved = max((first[k].float() - last[k].float()).abs().max().item() for k in first)
        assert moved > 0, "the second epoch left the weights as they were (every step skipped?)"
        return (
            f"losses {' '.join(f'{x:.3f}' for x in losses)}; weights moved {moved:.1e}; top-1 {evals[-1]['top1']:.3f}"
        )

    def resume(self) -> str:
        extra = [
            "precision=bf16",
            "optim.ema=0.9",
            "model.drop_path_rate=0.3",
            "optim.mixup=0.8",
            "optim.epochs=3",
            "data.batch_size=2",
            "save_every_steps=1",
            "keep_checkpoints=20",
            "log_every=1",
        ]
        full = self.work / "resume-full"
        records = self.train(full, *extra)
        cut = self.work / "resume-cut"  # a run killed after step 5 (mid-epoch): only that checkpoint survives
        cut.mkdir()
        shutil.copytree(full / "checkpoint-00000005", cut / "checkpoint-00000005")
        again = self.train(cut, *extra, "resume=auto")
        steps = {r["step"]: r["loss"] for r in records if r["kind"] == "train" and r["step"] > 5}
        resumed = {r["step"]: r["loss"] for r in again if r["kind"] == "train"}
        assert resumed.keys() == steps.keys(), f"resumed steps {sorted(resumed)}, expected {sorted(steps)}"
        worst = max(abs(resumed[s] - steps[s]) for s in steps)
        assert worst <= 1e-5, f"resumed losses differ by up to {worst:.2e}"
        last = sorted(p for p in full.glob("checkpoint-0*"))[-1].name
        a, b = (load_file(str(d / last / "model.safetensors")) for d in (full, cut))
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert diff <= 1e-5, f"final weights differ by up to {diff:.2e}"
        return f"{len(steps)} steps after the resume match (loss within {worst:.1e}, weights within {diff:.1e})"

    def eval_and_predict(self) -> str:
        run = self.work / "train-fp32"
        if not run.exists():
            self.train(run, "precision=fp32")
        checkpoint = sorted(run.glob("checkpoint-0*"))[-1]
        self.ca2st("eval", str(SMOKE), *self.overrides(run, f"checkpoint={checkpoint}"))
        top1 = json.loads((run / "eval" / "results.json").read_text())["metrics"]["top1"]
        video = next(self.root.rglob("*.mp4"))
        tops = {}
        for device in (self.device, "cpu"):
            out = self.work / f"predict-{device}"
            self.ca2st("predict", str(video), "--checkpoint", str(checkpoint), "--device", device, "--out", str(out))
            tops[device] = json.loads((out / f"{video.stem}.json").read_text())["top"]["class"]
        here, cpu = tops[self.device], tops["cpu"]
        worst = max(abs(a["prob"] - b["prob"]) for a, b in zip(here, cpu))
        assert [t["class"] for t in here] == [t["class"] for t in cpu] and worst < 1e-3, f"{here} vs {cpu}"
        return f"eval top-1 {top1:.3f}; predict on {self.device} matches the CPU (probabilities within {worst:.1e})"

    def two_ranks(self, backend: str, device: str) -> str:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        common = ["optim.epochs=1", "optim.warmup_epochs=0", "precision=fp32"]
        one = self.train(self.work / f"one-{backend}", *common, "data.batch_size=4")
        two = self.train(
            self.work / f"two-{backend}",
            *common,
            "data.batch_size=2",
            f"dist_backend={backend}",
            f"device={device}",
            launcher=launcher,
            env={"OMP_NUM_THREADS": "1"},
        )
        a, b = ([r["loss"] for r in rs if r["kind"] == "train"] for rs in (one, two))
        assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= 1e-4, f"losses {a} vs {b}"
        return f"2 ranks ({backend}) follow 1 process with twice the batch over {len(a)} steps"

    def two_ranks_one_gpu(self) -> str:
        if self.device != "cuda":
            return self.two_ranks("gloo", "cpu")
        return self.two_ranks("cuda:gloo", "cuda")  # NCCL's device map: every collective on GPU tensors

    def nccl(self) -> str:
        self.need_gpu(2)
        return self.two_ranks("nccl", "cuda")

    def fused_attention(self) -> str:
        self.need_gpu()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        import ca2st

        ca2st.models.set_attention_backend("sdpa")
        model = ca2st.build_model("ca2st_b16").cuda()
        model.cast_matmul_weights_(torch.bfloat16)
        video = torch.randn(2, 3, 16, 224, 224, device="cuda")
        audio = torch.randn(2, model.config.audio_frames, 128, device="cuda")
        fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
        with sdpa_kernel(fused), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(video, audio).float().logsumexp(-1).mean()
            loss.backward()
        torch.cuda.synchronize()
        grads = sum(p.grad is not None for p in model.parameters() if p.requires_grad)
        return f"forward + backward with fused kernels only; {grads} trainable tensors got gradients"

    def bench(self) -> str:
        self.need_gpu()
        table = self.ca2st(
            "bench",
            "--model",
            "cast_b16",
            "--batch",
            "8",
            "--precisions",
            "bf16",
            "--compile",
            "all",
            "--device",
            "cuda",
        )
        print(table, flush=True)
        return "figures above"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    parser.add_argument("--keep", help="keep the runs in this folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"gpu_check on {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        checks = Checks(device, work)
        for precision in ("fp32", "bf16", "fp16"):
            checks.run(f"train-{precision}", lambda p=precision: checks.training(p))
        checks.run("resume-exact", checks.resume)
        checks.run("eval-predict", checks.eval_and_predict)
        checks.run("two-ranks-one-gpu", checks.two_ranks_one_gpu)
        checks.run("nccl-two-gpus", checks.nccl)
        checks.run("sdpa-fused", checks.fused_attention)
        checks.run("bench-cast_b16", checks.bench)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    failed = [name for status, name, _ in checks.results if status == "FAIL"]
    print(f"{len(checks.results) - len(failed)} of {len(checks.results)} checks passed or skipped; failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
