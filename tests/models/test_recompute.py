import torch
from torch.utils.checkpoint import CheckpointPolicy

from ca2st.models.recompute import WIDE_REDUCTION, _keep

aten = torch.ops.aten


def test_policy_keeps_attention_and_wide_products_only():
    bias, weight = torch.zeros(768), torch.zeros(WIDE_REDUCTION, 768)
    wide, narrow = torch.zeros(10, WIDE_REDUCTION), torch.zeros(10, 768)
    assert _keep(None, aten.addmm.default, bias, wide, weight) is CheckpointPolicy.MUST_SAVE
    assert _keep(None, aten.mm.default, wide, weight) is CheckpointPolicy.MUST_SAVE
    assert _keep(None, aten.addmm.default, bias, narrow, weight[:768]) is CheckpointPolicy.PREFER_RECOMPUTE
    assert _keep(None, torch.ops.ca2st.blocked_attention.default) is CheckpointPolicy.MUST_SAVE
    assert _keep(None, aten._scaled_dot_product_flash_attention_for_cpu.default) is CheckpointPolicy.MUST_SAVE
    assert _keep(None, aten.gelu.default, narrow) is CheckpointPolicy.PREFER_RECOMPUTE
