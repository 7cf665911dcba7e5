import pytest
import torch
from torch import nn

from ca2st.models.layers import SelfAttention, resize_pos_table, sincos_table


def test_self_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    ours = SelfAttention(32, 4, "full")
    with torch.no_grad():
        nn.init.normal_(mha.in_proj_bias)
        ours.qkv.weight.copy_(mha.in_proj_weight)
        ours.qkv.bias.copy_(mha.in_proj_bias)
        ours.proj.load_state_dict(mha.out_proj.state_dict())
    x = torch.randn(3, 11, 32)
    expected = mha(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_qv_bias_attention_keeps_key_bias_at_zero():
    attn = SelfAttention(16, 2, "qv")
    assert attn.qkv.bias is None
    names = {n for n, _ in attn.named_parameters()}
    assert {"q_bias", "v_bias"} <= names and "k_bias" not in names
    assert "k_bias" not in attn.state_dict()


def test_sincos_table_matches_the_videomae_formula():
    table = sincos_table(10, 8)
    p, j = 7, 5  # odd channel: cos
    angle = p / 10000 ** (2 * (j // 2) / 8)
    assert table[p, j].item() == pytest.approx(torch.cos(torch.tensor(angle, dtype=torch.float64)).item(), abs=1e-7)
    assert table[p, 4].item() == pytest.approx(torch.sin(torch.tensor(p / 10000 ** (4 / 8))).item(), abs=1e-6)
    # a longer table starts with the shorter one: changing the frame count extends, never shifts, positions
    torch.testing.assert_close(sincos_table(20, 8)[:10], table)


def test_resize_pos_table_keeps_prefix_and_is_identity_on_same_grid():
    table = torch.randn(1 + 16, 8)
    assert resize_pos_table(table, (4, 4), (4, 4)) is table
    out = resize_pos_table(table, (4, 4), (6, 6), num_prefix=1)
    assert out.shape == (37, 8)
    torch.testing.assert_close(out[0], table[0])
    # a constant grid stays constant under any interpolation
    const = torch.ones(5, 3)
    torch.testing.assert_close(resize_pos_table(const, (5,), (9,)), torch.ones(9, 3))
