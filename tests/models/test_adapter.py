"""Adapters: identity (with skip) or zero (without) at initialisation, bottleneck width."""

import torch

from ca2st.models.adapter import Adapter


def test_adapter_initialisation():
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(Adapter(16, 0.25, skip=True)(x), x)
    assert torch.count_nonzero(Adapter(16, 0.25, skip=False)(x)) == 0
    assert Adapter(16, 0.25).fc1.out_features == 4
