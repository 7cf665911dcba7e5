"""What attention maps cost, and that the fast path pays nothing for them.

``attention()`` now tests one module global (the observer of :func:`ca2st.models.attention.observe_attention`)
per call. Timed in child processes, alternately on this tree's ``src`` and on ``--before`` (a checkout without the
observer, e.g. the main branch's ``src``): the per-call time of ``attention()`` on the smallest B-CA window (CAST's
T2S time window, fp32, where a fixed per-call cost shows most) and a ``cast_b16`` forward (``--size``); the
after/before ratios are the figure. In this process: the same forward with the maps recorded
(``ca2st.explain``'s recorder) against without, the cost of explaining. Best of ``--runs`` per child, best over
``--rounds`` alternations (the least disturbed figure on a shared machine). Usage:

    python benchmarks/bench_explain.py --before ../main/src [--rounds 6] [--runs 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MODEL = dict(embed_dim=128, depth=4, num_heads=2, num_frames=8, img_size=64, num_classes=10)


def model_and_clip():
    import ca2st

    torch.manual_seed(0)
    model = ca2st.build_model("cast_b16", **MODEL).eval()
    return model, torch.randint(0, 256, (1, 3, 8, 64, 64), dtype=torch.uint8)


def child(runs: int) -> dict:
    """Best per-call seconds of attention() on a T2S window and of a model forward, in this interpreter's ca2st."""
    from ca2st.bench import timed
    from ca2st.models.attention import attention

    q, k, v = (torch.randn(16, 2, 4, 32) for _ in range(3))  # 4x4 positions, 2 heads, 4 slots
    calls = 200

    def many():
        for _ in range(calls):
            attention(q, k, v)

    model, clip = model_and_clip()

    def forward():
        with torch.inference_mode():
            model(clip)

    return {"attention": min(timed(many, runs, 2, "cpu")) / calls, "forward": min(timed(forward, runs, 2, "cpu"))}


def run_child(src: Path, runs: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--runs", str(runs), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def explain_cost(runs: int, rounds: int) -> tuple[float, float]:
    from ca2st.bench import timed
    from ca2st.explanation import AttentionRecorder

    model, clip = model_and_clip()

    def plain():
        with torch.inference_mode():
            model(clip)

    def recorded():
        with torch.inference_mode(), AttentionRecorder(model, list(range(MODEL["depth"]))):
            model(clip)

    best = {plain: float("inf"), recorded: float("inf")}
    for _ in range(rounds):  # alternated, like the children
        for fn in best:
            best[fn] = min(best[fn], min(timed(fn, runs, 2, "cpu")))
    return best[plain], best[recorded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="the src folder of a ca2st without the observer")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.runs)))
        return
    after_src = HERE.parent / "src"
    if args.before:
        rounds = {"before": [], "after": []}
        for _ in range(args.rounds):
            rounds["before"].append(run_child(args.before.resolve(), args.runs, args.threads))
            rounds["after"].append(run_child(after_src, args.runs, args.threads))
        med = {
            side: {key: min(r[key] for r in results) for key in ("attention", "forward")}
            for side, results in rounds.items()
        }
        print(f"fast path, after/before ({args.rounds} alternating rounds, best of best-of-{args.runs}):")
        print(
            f"  attention() on a T2S window (16x2x4x32 fp32): {1e6 * med['before']['attention']:.2f} µs -> "
            f"{1e6 * med['after']['attention']:.2f} µs, ratio {med['after']['attention'] / med['before']['attention']:.3f}"
        )
        print(
            f"  cast_b16 forward {MODEL}: {1e3 * med['before']['forward']:.1f} ms -> "
            f"{1e3 * med['after']['forward']:.1f} ms, ratio {med['after']['forward'] / med['before']['forward']:.3f}"
        )
    plain, recorded = explain_cost(args.runs, args.rounds)
    print(
        f"maps recorded (all layers, rollout): {1e3 * plain:.1f} ms -> {1e3 * recorded:.1f} ms, "
        f"ratio {recorded / plain:.2f}"
    )


if __name__ == "__main__":
    main()
