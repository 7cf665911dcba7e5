import pytest
import torch
import torch.nn.functional as F

from ca2st.models.exchange import Exchange, WindowedCrossAttention

from helpers import randomize_


def naive_attention(q, k, v, heads):
    """Plain softmax attention of q (Lq, d) over k, v (Lk, d), one head at a time."""
    d = q.shape[-1]
    hd = d // heads
    outs = []
    for h in range(heads):
        s = slice(h * hd, (h + 1) * hd)
        w = torch.softmax(q[:, s] @ k[:, s].T * hd**-0.5, dim=-1)
        outs.append(w @ v[:, s])
    return torch.cat(outs, dim=-1)


def reference_window(attn: WindowedCrossAttention, qt, kvt):
    """Loop over the windows explicitly: the definition the batched SDPA version must equal."""
    B, T, N, d = qt.shape
    heads = attn.num_heads
    if attn.window == "time":
        qt = qt + attn.q_pos[:, None]
        kvt = kvt + attn.kv_pos[:, None]
    elif attn.window == "space":
        qt = qt + attn.q_pos
        kvt = kvt + attn.kv_pos
    q = attn.q(qt)
    k, v = attn.kv(kvt).split(d, dim=-1)
    out = torch.zeros_like(q)
    for b in range(B):
        if attn.window == "time":
            for n in range(N):
                out[b, :, n] = naive_attention(q[b, :, n], k[b, :, n], v[b, :, n], heads)
        elif attn.window == "space":
            for t in range(T):
                out[b, t] = naive_attention(q[b, t], k[b, t], v[b, t], heads)
        else:
            flat = naive_attention(q[b].reshape(-1, d), k[b].reshape(-1, d), v[b].reshape(-1, d), heads)
            out[b] = flat.view(T, N, d)
    return attn.proj(out)


@pytest.mark.parametrize(
    "window,q_grid,kv_grid", [("time", (3, 5), (3, 5)), ("space", (3, 5), (3, 7)), ("global", (3, 5), (1, 9))]
)
def test_windowed_attention_equals_explicit_loops(window, q_grid, kv_grid):
    attn = randomize_(WindowedCrossAttention(16, 4, window, q_grid, kv_grid))
    qt = torch.randn(2, *q_grid, 16)
    kvt = torch.randn(2, *kv_grid, 16)
    torch.testing.assert_close(attn(qt, kvt), reference_window(attn, qt, kvt), atol=1e-5, rtol=1e-5)


def test_position_table_shapes_follow_the_window():
    assert WindowedCrossAttention(16, 2, "time", (4, 9), (4, 9)).q_pos.shape == (4, 16)
    space = WindowedCrossAttention(16, 2, "space", (4, 9), (4, 16))
    assert space.q_pos.shape == (9, 16) and space.kv_pos.shape == (16, 16)
    assert WindowedCrossAttention(16, 2, "global", (1, 9), (4, 16)).q_pos is None


@pytest.mark.parametrize(
    "window,q_grid,kv_grid,match",
    [
        ("time", (4, 9), (2, 9), "equal time slots"),
        ("space", (4, 9), (2, 9), "equal time slots"),
        ("time", (4, 9), (4, 16), "from a 3x3 query grid onto finer 4x4 keys needs 3 to divide 4"),
        ("time", (4, 8), (4, 16), "needs square grids"),
        ("diagonal", (4, 9), (4, 9), "window must be one of"),
    ],
)
def test_incompatible_windows_are_rejected(window, q_grid, kv_grid, match):
    with pytest.raises(ValueError, match=match):
        WindowedCrossAttention(16, 2, window, q_grid, kv_grid)


def make_exchange(**kw):
    args = dict(
        a="spatial",
        b="temporal",
        dims=(32, 32),
        width=16,
        num_heads=4,
        windows=("time", "space"),
        grids=((3, 4), (3, 4)),
        specials=(1, 0),
    )
    args.update(kw)
    return Exchange(**args)


def test_exchange_is_zero_at_initialisation():
    ex = make_exchange()
    xa, xb = torch.randn(2, 3, 5, 32), torch.randn(2, 3, 4, 32)
    da, db = ex(xa, xb)
    assert torch.count_nonzero(da) == 0 and torch.count_nonzero(db) == 0


def test_special_tokens_skip_attention_but_pass_through_the_bottleneck():
    ex = randomize_(make_exchange()).eval()
    xa, xb = torch.randn(2, 3, 5, 32), torch.randn(2, 3, 4, 32)
    ya, yb = ex(xa, xb)
    na = ex.norm_a(ex.proj_a.down(xa))
    expected_cls = ex.proj_a.up(F.gelu(na[:, :, :1]))
    torch.testing.assert_close(ya[:, :, :1], expected_cls)
    # patch outputs depend on the other stream, the class token does not
    ya2, _ = ex(xa, xb + 1)
    torch.testing.assert_close(ya2[:, :, :1], ya[:, :, :1])
    assert not torch.allclose(ya2[:, :, 1:], ya[:, :, 1:])
    # keys never include the class token: changing it leaves the other stream's update unchanged
    xa3 = xa.clone()
    xa3[:, :, 0] += 5
    torch.testing.assert_close(ex(xa3, xb)[1], yb)


def test_a_coarser_key_grid_that_does_not_divide_is_laid_by_nearest_neighbour():
    """DINOv2's 16x16 patches query VideoMAE's 14x14 tokens along time: each query position takes the keys of the
    nearest key cell, the rule of F.interpolate(mode="nearest") (and plain repetition when the sides divide)."""
    from ca2st.models.exchange import align_grid

    kv = torch.randn(2, 3, 14 * 14, 5)
    out = align_grid(kv, 16 * 16)
    grid = kv.view(2 * 3, 14, 14, 5).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(16, 16), mode="nearest")
    torch.testing.assert_close(out, expected.permute(0, 2, 3, 1).reshape(2, 3, 256, 5), rtol=0, atol=0)
    small = torch.randn(1, 2, 4, 3)  # 2x2 onto 4x4: the divisible case, unchanged
    repeated = small.view(1, 2, 2, 1, 2, 1, 3).expand(1, 2, 2, 2, 2, 2, 3).reshape(1, 2, 16, 3)
    torch.testing.assert_close(align_grid(small, 16), repeated, rtol=0, atol=0)
    # an exchange between the two grids runs, and its time window reads the aligned keys
    attn = WindowedCrossAttention(16, 2, "time", (4, 16 * 16), (4, 14 * 14))
    q, k = torch.randn(1, 4, 256, 16), torch.randn(1, 4, 196, 16)
    assert attn(q, k).shape == (1, 4, 256, 16)
