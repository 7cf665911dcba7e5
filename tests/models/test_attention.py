import contextlib
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ca2st.errors import ConfigError
from ca2st.models import attention as attention_module
from ca2st.models import set_attention_backend
from ca2st.models.attention import attention, attention_backend, recompute_probabilities

SHAPES = [  # (batch dims, query tokens, key tokens, head dim, value dim)
    ((2, 3), 40, 40, 16, 16),
    ((1, 12), 200, 200, 64, 64),  # more scores than one block: several blocks of heads
    ((5, 2), 8, 8, 32, 32),  # time windows
    ((1, 4), 60, 25, 48, 24),  # cross-attention, head dim without an exact bf16 scale
    ((3,), 17, 33, 8, 8),  # 3-D input
    ((), 9, 12, 8, 8),  # 2-D input
]


def _inputs(batch, lq, lk, e, ev, logit_scale=2.0):
    q = (torch.randn(*batch, lq, e) * logit_scale).bfloat16().requires_grad_()
    k = torch.randn(*batch, lk, e).bfloat16().requires_grad_()
    v = torch.randn(*batch, lk, ev).bfloat16().requires_grad_()
    return q, k, v


def _reference(q, k, v, grad):
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves)
    out.backward(grad.double())
    return out, [t.grad for t in leaves]


def _error(a, b):
    return (a.double() - b).abs().max().item() / b.abs().max().item()


@pytest.mark.parametrize("block", [1 << 16, 1 << 13])  # several blocks of heads; 200² heads in row chunks too
@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_cpu_attention_is_as_accurate_as_sdpa(shape, block, monkeypatch):
    monkeypatch.setattr(attention_module, "BLOCK_ELEMENTS", block)
    q, k, v = _inputs(*shape)
    grad = torch.randn(*q.shape[:-1], v.shape[-1]).bfloat16()
    ref, ref_grads = _reference(q, k, v, grad)
    results = {}
    for name, fn in (("ours", attention), ("sdpa", F.scaled_dot_product_attention)):
        q.grad = k.grad = v.grad = None
        out = fn(q, k, v)
        out.backward(grad)
        assert out.shape == ref.shape and out.dtype == torch.bfloat16
        results[name] = [_error(out, ref)] + [_error(t.grad, r) for t, r in zip((q, k, v), ref_grads)]
    for ours, sdpa in zip(results["ours"], results["sdpa"]):
        assert ours < max(2 * sdpa, 1e-2), results  # bf16 rounding only, like SDPA's fp32-score kernel


@pytest.mark.parametrize("block", [1 << 16, 1 << 13])  # with 1 << 13, 200² heads are kept in row chunks
@pytest.mark.parametrize("shape", SHAPES[:4])
def test_kept_and_recomputed_probabilities_give_the_same_gradients(shape, block, monkeypatch):
    monkeypatch.setattr(attention_module, "BLOCK_ELEMENTS", block)
    q, k, v = _inputs(*shape)
    grad = torch.randn(*q.shape[:-1], v.shape[-1]).bfloat16()
    grads = {}
    for keep in (True, False):
        q.grad = k.grad = v.grad = None
        with contextlib.nullcontext() if keep else recompute_probabilities():
            out = attention(q, k, v)
        out.backward(grad)
        grads[keep] = [t.grad for t in (q, k, v)]
    for kept, recomputed in zip(grads[True], grads[False]):
        assert torch.equal(kept, recomputed)  # same blocks, same products: the same bits


def test_long_heads_are_computed_in_equal_row_chunks(monkeypatch):
    monkeypatch.setattr(attention_module, "BLOCK_ELEMENTS", 1 << 13)
    assert attention_module._row_chunks(200, 200) == [(0, 40), (40, 80), (80, 120), (120, 160), (160, 200)]
    assert attention_module._row_chunks(60, 25) == [(0, 60)]
    q, k, v = _inputs((1, 2), 200, 200, 16, 16)
    with torch.no_grad():
        chunked = attention(q, k, v)
        monkeypatch.setattr(attention_module, "BLOCK_ELEMENTS", 1 << 21)
        whole = attention(q, k, v)
    torch.testing.assert_close(chunked, whole)  # rows are independent: the same softmax, chunk by chunk


def test_probabilities_are_kept_only_when_autograd_needs_them(monkeypatch):
    monkeypatch.setattr(attention_module, "BLOCK_ELEMENTS", 1800)  # 3 heads of 30 × 20 scores per block
    q, k, v = _inputs((2, 3), 30, 20, 8, 8)
    q3, k3, v3 = (t.detach().reshape(6, *t.shape[-2:]) for t in (q, k, v))
    out, shift, kept = torch.ops.ca2st.blocked_attention(q3, k3, v3, True)
    assert [p.shape for p in kept] == [(3, 30, 20), (3, 30, 20)]
    torch.testing.assert_close(torch.cat(kept) @ v3, out)
    assert torch.ops.ca2st.blocked_attention(q3, k3, v3, False)[2] == []
    calls = []
    real = torch.ops.ca2st.blocked_attention
    monkeypatch.setattr(torch.ops.ca2st, "blocked_attention", lambda *a: calls.append(a[3]) or real(*a))
    attention(q, k, v)
    with recompute_probabilities():
        attention(q, k, v)
    with torch.no_grad():
        attention(q, k, v)
    attention(q.detach(), k.detach(), v.detach())
    attention(q, k, v)  # kept again once the context is left
    assert calls == [True, False, False, False, True]


def test_scores_keep_their_accuracy_for_large_logits():
    # plain bf16 scores lose |q·k|·2⁻⁹: with logits around 40 that is a 10 % error in the weights
    q, k, v = _inputs((1, 2), 64, 64, 64, 64, logit_scale=40.0)
    grad = torch.randn_like(q)
    ref, _ = _reference(q, k, v, grad)
    with torch.no_grad():
        plain = torch.softmax(q @ k.transpose(-1, -2) * 0.125, -1) @ v
        ours = attention(q, k, v)
    assert _error(ours, ref) < 0.02 < _error(plain, ref)


@pytest.fixture
def backend():
    """set_attention_backend, restored after the test."""
    previous = attention_backend()
    yield set_attention_backend
    set_attention_backend(previous)


def test_backend_chooses_the_kernel(monkeypatch, backend):
    calls = []
    sdpa, blocked = F.scaled_dot_product_attention, torch.ops.ca2st.blocked_attention
    monkeypatch.setattr(
        attention_module.F,
        "scaled_dot_product_attention",
        lambda *a, **kw: calls.append(("sdpa", a[0].dtype)) or sdpa(*a, **kw),
    )
    monkeypatch.setattr(
        torch.ops.ca2st, "blocked_attention", lambda *a: calls.append(("blocked", a[0].dtype)) or blocked(*a)
    )
    q, k, v = _inputs((1, 2), 10, 10, 8, 8)
    backend("auto")
    attention(q.float(), k.float(), v.float())
    attention(q, k, v)
    assert calls == [("sdpa", torch.float32), ("blocked", torch.bfloat16)]  # bf16 on CPU: the blocked kernel
    calls.clear()
    backend("sdpa")
    attention(q.float(), k.float(), v.float())
    attention(q, k, v)
    assert calls == [("sdpa", torch.float32), ("sdpa", torch.bfloat16)]


def test_bad_backend_names_raise_config_error(backend):
    with pytest.raises(ConfigError, match=r"attention backend must be one of \['auto', 'sdpa'\], got 'flash'"):
        backend("flash")


def test_environment_variable_sets_the_default_backend():
    script = "from ca2st.models.attention import attention_backend; print(attention_backend())"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CA2ST_ATTENTION": "sdpa"},
    )
    assert out.stdout == "sdpa\n"


def test_bad_environment_variable_is_a_config_error():
    environ = {**os.environ, "CA2ST_ATTENTION": "fast"}
    out = subprocess.run([sys.executable, "-c", "import ca2st.models"], capture_output=True, text=True, env=environ)
    assert out.returncode == 1
    assert "ConfigError: environment variable CA2ST_ATTENTION must be one of ['auto', 'sdpa'], got 'fast'" in out.stderr


def test_row_max_is_exact_for_every_sign():
    x = (torch.randn(6, 300) * 50).bfloat16()
    x[0] = -x[0].abs()  # all negative
    x[1] = x[1].abs()  # all non-negative
    x[2] = -0.0  # negative zeros only
    x[3, :] = -5.0
    x[3, 7] = 0.0
    x[4, :] = float("-inf")
    x[4, 3] = -1e30
    for rows in (x, x[[1, 3, 5]]):  # with all-negative rows, and without (no int16 minimum needed)
        out = torch.empty(len(rows), 1, dtype=torch.bfloat16)
        attention_module._row_max(rows, out)
        assert torch.equal(out, rows.amax(-1, keepdim=True))


def test_blocked_attention_compiles_and_checkpoints():
    q, k, v = _inputs((2, 2), 24, 24, 16, 16)
    compiled = torch.compile(attention, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), attention(q, k, v), atol=0, rtol=0)
    grad = torch.randn_like(q)
    attention(q, k, v).backward(grad)
    expected = [t.grad.clone() for t in (q, k, v)]
    q.grad = k.grad = v.grad = None
    out = torch.utils.checkpoint.checkpoint(attention, q, k, v, use_reentrant=False)
    out.backward(grad)
    for t, e in zip((q, k, v), expected):
        assert torch.equal(t.grad, e)


def test_empty_inputs_behave_like_sdpa():
    for lq, lk in ((0, 5), (4, 0)):
        q, k = torch.randn(2, 3, lq, 8).bfloat16(), torch.randn(2, 3, lk, 8).bfloat16()
        expected = F.scaled_dot_product_attention(q, k, k)
        out = attention(q, k, k)
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, equal_nan=True)
