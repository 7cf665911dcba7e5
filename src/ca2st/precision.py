"""Numeric precision policies, set in one place for training, evaluation, prediction and benchmarks.

* ``precision``: ``'fp32'``, or ``'bf16'`` / ``'fp16'``: matmuls and convolutions under :func:`autocast` to that
  type. Whatever the precision, every expert's residual stream stays float32 (the models cast each stream to
  float32 after its embedding; norms, residual sums and the softmax run in float32, matmul outputs are 16-bit and
  promoted when added), on CPU and CUDA alike.
* TF32: on NVIDIA Ampere and later, fp32 matmuls and convolutions run on TF32 tensor cores (10-bit mantissa
  inputs, fp32 accumulation) inside :func:`fp32_matmul_policy` unless ``exact=True`` (``--exact-fp32`` /
  ``exact_fp32=true``), which keeps IEEE fp32. It affects only CUDA; CPU fp32 is always IEEE.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import ConfigError

__all__ = ["PRECISIONS", "autocast", "check_precision", "fp32_matmul_policy", "low_precision_dtype"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # name -> autocast dtype


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def low_precision_dtype(precision: str) -> torch.dtype | None:
    """The autocast type of ``precision`` (``None`` for fp32)."""
    return PRECISIONS[check_precision(precision)]


def autocast(precision: str, device: torch.device | str):
    """Autocast to ``precision``'s type on ``device`` (a no-op context for fp32)."""
    dtype = low_precision_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def fp32_matmul_policy(exact: bool = False) -> Iterator[None]:
    """Within the block, CUDA fp32 matmuls and convolutions use TF32 (``exact=False``) or IEEE fp32
    (``exact=True``); the previous settings come back afterwards."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    mode = "ieee" if exact else "tf32"
    matmul.fp32_precision = conv.fp32_precision = mode
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before
