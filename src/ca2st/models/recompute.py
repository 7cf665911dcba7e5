"""What activation checkpointing keeps: a selective policy for ``torch.utils.checkpoint``.

A checkpointed layer is recomputed before its backward pass, except the ops whose outputs are worth
their memory: the attention kernels (a few MB per layer, the costliest part of a layer to recompute)
and the matrix products that reduce over ``WIDE_REDUCTION`` or more inputs — the MLPs' second layers,
2.4 MB of bf16 output for 7.4 GFLOP at 1568 tokens. Everything else is recomputed.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from .attention import attention_ops

WIDE_REDUCTION = 2048


def _keep(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op in attention_ops():
        return CheckpointPolicy.MUST_SAVE
    aten = torch.ops.aten
    if op is aten.addmm.default and args[1].shape[-1] >= WIDE_REDUCTION:
        return CheckpointPolicy.MUST_SAVE
    if op is aten.mm.default and args[0].shape[-1] >= WIDE_REDUCTION:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def selective_checkpoint_context():
    """``context_fn`` for ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``."""
    return create_selective_checkpoint_contexts(_keep)
