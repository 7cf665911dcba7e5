"""bf16 attention on CPU: SDPA against ca2st's head-blocked kernel, on the shapes of the CA²ST models.

For each shape, in one process: forward (under ``inference_mode``) and forward + backward latency,
best of ``--runs`` after warm-up, their ratio, and the largest error of each against an fp64
reference (relative to the reference's largest magnitude). The kernel's forward + backward is timed
twice: keeping the probabilities for the backward (the default) and recomputing them there (as under
activation checkpointing), with glibc keeping freed memory as CPU training does. Usage:

    python benchmarks/bench_attention.py [--runs 10] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ca2st.bench import timed
from ca2st.engine.host_memory import keep_freed_memory
from ca2st.models.attention import attention, recompute_probabilities


def recomputing(q, k, v):
    with recompute_probabilities():
        return attention(q, k, v)


# (name, batch·windows, heads, query tokens, key tokens, head dim) at batch 1
SHAPES = [
    ("VideoMAE self-attention", 1, 12, 1568, 1568, 64),
    ("CLIP self-attention (8 frames)", 8, 12, 197, 197, 64),
    ("B-CA space window (S2T)", 8, 12, 196, 196, 32),
    ("B-CA time window (T2S)", 196, 12, 8, 8, 32),
    ("B-CA global, video over audio", 1, 12, 1568, 468, 32),
    ("B-CA global, audio over video", 1, 12, 468, 1568, 32),
    ("AST self-attention", 1, 12, 470, 470, 64),
]


def forward_time(fn, q, k, v, runs):
    def forward():
        with torch.inference_mode():
            fn(q, k, v)

    return min(timed(forward, runs, 2, "cpu"))


def forward_backward_time(fn, q, k, v, grad, runs):
    def forward_backward():
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(grad)

    return min(timed(forward_backward, runs, 2, "cpu"))


def measure(fn, q, k, v, grad, runs):
    return forward_time(fn, q, k, v, runs), forward_backward_time(fn, q, k, v, grad, runs)


def errors(fn, q, k, v, grad, ref, ref_grads):
    q.grad = k.grad = v.grad = None
    out = fn(q, k, v)
    out.backward(grad)
    pairs = [(out, ref)] + list(zip((q.grad, k.grad, v.grad), ref_grads))
    return max((a.double() - b).abs().max().item() / b.abs().max().item() for a, b in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as in CPU training: kept probabilities reuse freed memory instead of faulting it in
    torch.manual_seed(0)
    print(f"bf16 attention, {args.threads} threads, torch {torch.__version__}; times in ms, best of {args.runs}")
    print(
        f"{'shape':<34}{'SDPA fwd':>9}{'ours fwd':>9}{'ratio':>7}{'SDPA f+b':>10}{'ours f+b':>9}{'ratio':>7}"
        f"{'recomp.':>9}{'ratio':>7}{'SDPA err':>10}{'ours err':>10}"
    )
    for name, b, h, lq, lk, e in SHAPES:
        q = torch.randn(b, h, lq, e).mul(2).bfloat16().requires_grad_()
        k, v = (torch.randn(b, h, lk, e).bfloat16().requires_grad_() for _ in range(2))
        grad = torch.randn(b, h, lq, e).bfloat16()
        leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
        ref = F.scaled_dot_product_attention(*leaves)
        ref.backward(grad.double())
        ref_grads = [t.grad for t in leaves]
        sdpa = measure(F.scaled_dot_product_attention, q, k, v, grad, args.runs)
        ours = measure(attention, q, k, v, grad, args.runs)
        recomputed = forward_backward_time(recomputing, q, k, v, grad, args.runs)  # same forward as ours
        err_sdpa = errors(F.scaled_dot_product_attention, q, k, v, grad, ref, ref_grads)
        err_ours = errors(attention, q, k, v, grad, ref, ref_grads)
        print(
            f"{name:<34}{sdpa[0] * 1e3:>9.2f}{ours[0] * 1e3:>9.2f}{sdpa[0] / ours[0]:>7.2f}"
            f"{sdpa[1] * 1e3:>10.2f}{ours[1] * 1e3:>9.2f}{sdpa[1] / ours[1]:>7.2f}{recomputed * 1e3:>9.2f}"
            f"{sdpa[1] / recomputed:>7.2f}{err_sdpa:>10.1e}{err_ours:>10.1e}"
        )


if __name__ == "__main__":
    main()
