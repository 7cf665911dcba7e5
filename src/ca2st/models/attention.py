"""Scaled dot-product attention: SDPA, except for bf16 on CPU where a head-blocked kernel is faster.

PyTorch's CPU flash-attention kernel runs bf16 at fp32 speed (about 130 GFLOP/s on a 2-core EPYC
whose bf16 matrix products reach 700 GFLOP/s). For bf16 on CPU, :func:`attention` therefore computes a
few heads at a time with oneDNN batched products and a softmax over one score block that stays in
cache: 1.9× faster than SDPA forward and forward + backward on VideoMAE's 1568-token layers, 2.3–2.5×
on CLIP's and the exchanges' short windows (``benchmarks/bench_attention.py``). The kernel is a
custom op (``torch.ops.ca2st.blocked_attention``, opaque to ``torch.compile``). Everything else
(fp32, fp16, GPU) goes to :func:`torch.nn.functional.scaled_dot_product_attention`.

Scores stay accurate although the products write bf16: a first product finds each query's largest
raw score ``m`` (in bf16), and the scores are then computed as ``scale · (q·k − m)`` by one product of
``[q, −m]`` with ``[k, 1]``, so the entries that dominate the softmax are rounded relative to their
small distance from the maximum, not to their magnitude (plain bf16 scores lose ``|q·k| · 2⁻⁹``,
which grows with the logits). ``m`` is kept for the backward pass. When autograd needs the attention,
the bf16 probabilities are kept too, in blocks of a few MiB (which glibc serves from its heap),
and the backward saves a third of its work; inside :func:`recompute_probabilities` — what activation
checkpointing enters, since its policy keeps attention's outputs for every layer — the backward
recomputes them block by block from ``m``, as flash attention does.

:func:`set_attention_backend` chooses between this dispatch (``"auto"``) and SDPA everywhere
(``"sdpa"``); the ``CA2ST_ATTENTION`` environment variable, read once at import, sets the default.

:func:`observe_attention` (what ``ca2st.explain`` enters) hands every call's ``q`` and ``k`` to a callback
before the output is computed as usual; :func:`attention_probabilities` turns them into the probabilities.
Outside it, the only extra work per call is one test of a module global.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ..errors import ConfigError

BLOCK_ELEMENTS = 1 << 21
"""Scores per block (``heads × queries × keys``): 4 MiB of bf16. A longer head (VideoMAE's 1568²)
is computed in row chunks in the forward."""

BACKENDS = ("auto", "sdpa")
ENV_BACKEND = "CA2ST_ATTENTION"


def _checked_backend(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"{source} must be one of {list(BACKENDS)}, got {name!r}")
    return name


_backend = _checked_backend(os.environ.get(ENV_BACKEND, "auto"), f"environment variable {ENV_BACKEND}")
_keep_probabilities = True
_observer: Callable[[torch.Tensor, torch.Tensor], None] | None = None


def set_attention_backend(name: str) -> None:
    """How :func:`attention` computes, for the whole process: ``"auto"`` (the head-blocked kernel for
    bf16 on CPU, SDPA elsewhere) or ``"sdpa"`` (SDPA everywhere). The default is ``CA2ST_ATTENTION``'s
    value at import, else ``"auto"``."""
    global _backend
    _backend = _checked_backend(name, "attention backend")


def attention_backend() -> str:
    """The backend :func:`set_attention_backend` chose."""
    return _backend


@contextlib.contextmanager
def recompute_probabilities() -> Iterator[None]:
    """Inside, the blocked kernel keeps no probabilities for the backward pass: the backward recomputes
    them. Activation checkpointing enters it, as its policy keeps every layer's attention outputs."""
    global _keep_probabilities
    previous, _keep_probabilities = _keep_probabilities, False
    try:
        yield
    finally:
        _keep_probabilities = previous


@contextlib.contextmanager
def observe_attention(callback: Callable[[torch.Tensor, torch.Tensor], None]) -> Iterator[None]:
    """Inside, every :func:`attention` call first hands its ``q`` and ``k`` to ``callback(q, k)``; the output is
    then computed exactly as outside (same kernel, same result). For reading the model's own attention maps."""
    global _observer
    previous, _observer = _observer, callback
    try:
        yield
    finally:
        _observer = previous


def attention_probabilities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``softmax(q kᵀ / √E)`` in float32, ``(..., Lq, Lk)``: the probabilities :func:`attention` applies to the
    values (up to its kernel's rounding)."""
    scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.softmax(dim=-1)


def _use_blocked(q: torch.Tensor, k: torch.Tensor) -> bool:
    return (
        _backend == "auto"
        and q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and k.dtype == torch.bfloat16
        and q.numel() > 0
        and k.numel() > 0
    )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention of ``(..., Lq, E)`` queries over ``(..., Lk, E)`` keys and ``(..., Lk, Ev)`` values.

    Same contract and result as ``F.scaled_dot_product_attention(q, k, v)`` (no mask, scale
    ``E ** -0.5``), computed as :func:`set_attention_backend` chose. The blocked kernel stores the
    probabilities for the backward pass when autograd needs one, except inside
    :func:`recompute_probabilities`. Inside :func:`observe_attention`, ``q`` and ``k`` go to its callback first.
    """
    if _observer is not None:
        _observer(q, k)
    if not _use_blocked(q, k):
        return F.scaled_dot_product_attention(q, k, v)
    keep = _keep_probabilities and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    batch = q.shape[:-2]
    q3, k3, v3 = (t.reshape(math.prod(t.shape[:-2]), *t.shape[-2:]) for t in (q, k, v))
    out = torch.ops.ca2st.blocked_attention(q3, k3, v3, keep)[0]
    return out.view(*batch, *out.shape[-2:])


def _heads_per_block(heads: int, lq: int, lk: int) -> int:
    return max(1, min(heads, BLOCK_ELEMENTS // max(1, lq * lk)))


def _row_max(scores: torch.Tensor, out: torch.Tensor) -> None:
    """Largest bf16 score of each row, exactly, via integer reductions (bf16 ``amax`` is 6× slower on CPU).

    Read as int16, non-negative bf16 values keep their order and negative ones reverse theirs but stay
    below every non-negative one: a row whose int16 maximum is non-negative has it as its maximum; an
    all-negative row's maximum is its int16 minimum (reduced only when there is such a row).
    """
    bits, top = scores.view(torch.int16), out.view(torch.int16)
    torch.amax(bits, dim=-1, keepdim=True, out=top)
    if bool((top < 0).any()):
        torch.where(top >= 0, top, bits.amin(dim=-1, keepdim=True), out=top)


def _with_ones(k: torch.Tensor) -> torch.Tensor:
    """``[k, 1]``, the keys of :func:`_scores`: built once per call."""
    return torch.cat((k, k.new_ones(*k.shape[:-1], 1)), dim=-1)


def _scores(q: torch.Tensor, k_ones: torch.Tensor, shift: torch.Tensor, out: torch.Tensor) -> None:
    """``out = scale · (q·kᵀ − shift)``: one product of ``[q, −shift]`` with ``[k, 1]``."""
    qa = torch.cat((q, shift.neg()), dim=-1)
    torch.baddbmm(out, qa, k_ones.transpose(1, 2), beta=0, alpha=q.shape[-1] ** -0.5, out=out)


def _blocks(heads: int, lq: int, lk: int):
    g = _heads_per_block(heads, lq, lk)
    return [(i, min(i + g, heads)) for i in range(0, heads, g)]


def _row_chunks(lq: int, lk: int):
    """Query rows per pass of the forward: all of them, or equal chunks when one head's scores exceed
    ``BLOCK_ELEMENTS`` (VideoMAE: two chunks of 784 rows, whose 2.4 MB stay nearer the cores)."""
    parts = max(1, -(-lq * lk // BLOCK_ELEMENTS))
    rows = -(-lq // parts)
    return [(r, min(r + rows, lq)) for r in range(0, lq, rows)]


@torch.library.custom_op("ca2st::blocked_attention", mutates_args=())
def _blocked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: bool
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Forward of the head-blocked kernel on ``(heads, L, E)``: the output, each query's score shift
    and, if ``keep``, the probabilities of each block of heads (else an empty list)."""
    heads, lq, _ = q.shape
    lk = k.shape[1]
    g = _heads_per_block(heads, lq, lk)
    chunks = _row_chunks(lq, lk)  # several only when a block is one head (g == 1): views stay contiguous
    rows = chunks[0][1]
    out = q.new_empty(heads, lq, v.shape[-1])
    shift = q.new_empty(heads, lq, 1)
    scores, scratch = q.new_empty(g, rows, lk), None if keep else q.new_empty(g, rows, lk)
    k_ones = _with_ones(k)
    kept = []
    for i, j in _blocks(heads, lq, lk):
        n = j - i
        probs = q.new_empty(n, lq, lk) if keep else None
        for r, t in chunks:
            qr, sr, block = q[i:j, r:t], shift[i:j, r:t], scores[:n, : t - r]
            torch.bmm(qr, k[i:j].transpose(1, 2), out=block)
            _row_max(block, sr)
            _scores(qr, k_ones[i:j], sr, block)
            p = probs[:, r:t] if keep else scratch[:n, : t - r]
            torch.ops.aten._softmax.out(block, -1, False, out=p)
            torch.bmm(p, v[i:j], out=out[i:j, r:t])
        if keep:
            kept.append(probs)
    return out, shift, kept


@_blocked_attention.register_fake
def _(q, k, v, keep):
    heads, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    kept = [q.new_empty(j - i, lq, lk) for i, j in _blocks(heads, lq, lk)] if keep else []
    return q.new_empty(heads, lq, v.shape[-1]), q.new_empty(heads, lq, 1), kept


@torch.library.custom_op("ca2st::blocked_attention_backward", mutates_args=())
def _blocked_attention_backward(
    grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shift: torch.Tensor, kept: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for q, k and v, with the kept probabilities or, if none, recomputing each block's
    from the saved shift."""
    heads, lq, e = q.shape
    lk = k.shape[1]
    scale = e**-0.5
    g = _heads_per_block(heads, lq, lk)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    scores = q.new_empty(g, lq, lk)
    if not kept:
        scratch, k_ones = q.new_empty(g, lq, lk), _with_ones(k)
    grad = grad.to(q.dtype)
    for b, (i, j) in enumerate(_blocks(heads, lq, lk)):
        n = j - i
        if kept:
            p = kept[b]
        else:
            _scores(q[i:j], k_ones[i:j], shift[i:j], scores[:n])
            p = scratch[:n]
            torch.ops.aten._softmax.out(scores[:n], -1, False, out=p)
        torch.bmm(p.transpose(1, 2), grad[i:j], out=dv[i:j])
        torch.bmm(grad[i:j], v[i:j].transpose(1, 2), out=scores[:n])  # d probs
        ds = torch.ops.aten._softmax_backward_data.out(scores[:n], p, -1, q.dtype, grad_input=scores[:n])
        torch.baddbmm(dq[i:j], ds, k[i:j], beta=0, alpha=scale, out=dq[i:j])
        torch.baddbmm(dk[i:j], ds.transpose(1, 2), q[i:j], beta=0, alpha=scale, out=dk[i:j])
    return dq, dk, dv


@_blocked_attention_backward.register_fake
def _(grad, q, k, v, shift, kept):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, _ = inputs
    _, shift, kept = output
    ctx.mark_non_differentiable(shift, *kept)
    ctx.set_materialize_grads(False)  # no zero gradients for the shift and the kept probabilities
    ctx.save_for_backward(q, k, v, shift, *kept)


def _backward(ctx, grad_out, grad_shift, grad_kept):
    if grad_out is None:
        return None, None, None, None
    q, k, v, shift, *kept = ctx.saved_tensors
    return *torch.ops.ca2st.blocked_attention_backward(grad_out.contiguous(), q, k, v, shift, kept), None


_blocked_attention.register_autograd(_backward, setup_context=_setup_context)


@functools.cache
def attention_ops() -> frozenset:
    """The kernels :func:`attention` may dispatch to (its own and SDPA's), as op overloads."""
    aten = torch.ops.aten
    names = (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    return frozenset(
        [torch.ops.ca2st.blocked_attention.default] + [getattr(aten, n).default for n in names if hasattr(aten, n)]
    )
