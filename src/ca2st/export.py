"""``ca2st export``: a model as a fixed-shape ONNX or TorchScript file, checked against PyTorch after export.

The graph takes what :meth:`~ca2st.models.MultiExpertModel.forward` takes, at a fixed batch size: ``video``
``(B, 3, T, S, S)`` normalised float clips, and ``audio`` ``(B, frames, mel bins)`` log-mel features for models
with an audio expert. It returns the logits: one output ``logits``, or one output per task named after it
(``verb``, ``noun``) for composition models. With ``precision="fp16"`` the graph computes matrix products and
convolutions in float16 (PyTorch's autocast, traced: the weights are stored in float16, norms, softmax and the
residual streams stay float32, as :mod:`ca2st.precision` describes); inputs and outputs stay float32.
Attention is exported with the SDPA backend (:func:`~ca2st.models.set_attention_backend`), which the exporters
decompose into MatMul and Softmax; the backend chosen before comes back afterwards.

ONNX goes through ``torch.onnx.export(dynamo=True)`` (``torch.export``), falling back to the TorchScript-based
exporter (``dynamo=False``, opset :data:`FALLBACK_OPSET`) when ``torch.export`` cannot capture the model.
TorchScript is ``torch.jit.trace``. Either way the file is then run (onnxruntime on CPU, or ``torch.jit.load``)
on a random input and compared with the PyTorch model; a difference above :data:`TOLERANCES` raises.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .models.attention import attention_backend, set_attention_backend
from .models.multiexpert import MultiExpertModel
from .precision import autocast, low_precision_dtype

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> file suffix
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2}
"""Largest absolute difference of any logit between the exported file and the float32 PyTorch model: for fp32 the
value itself; for fp16 relative to the largest logit (at least 1), as float16 rounding (2⁻¹¹) adds up over layers."""
FALLBACK_OPSET = 18
INPUT_SEED = 0


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how closely the file reproduces the PyTorch model."""

    path: Path
    format: str
    precision: str
    exporter: str
    inputs: dict[str, tuple[int, ...]]
    outputs: list[str]
    max_abs_diff: float
    tolerance: float

    def summary(self) -> str:
        shapes = ", ".join(f"{name} {shape}" for name, shape in self.inputs.items())
        return (
            f"{self.format} ({self.precision}, {self.exporter}): {self.path}\n"
            f"inputs: {shapes}; outputs: {', '.join(self.outputs)}\n"
            f"max abs difference to the float32 PyTorch model: {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g})"
        )


class ExportGraph(nn.Module):
    """The model as the exported graph sees it: positional inputs by modality, a tuple of float32 logits in task
    order, computed at ``precision`` (for fp16: on a copy of the model with float16 weights)."""

    def __init__(self, model: MultiExpertModel, precision: str = "fp32"):
        super().__init__()
        self.precision = precision
        low = low_precision_dtype(precision)
        if low is not None:
            model = copy.deepcopy(model).cast_matmul_weights_(low, trainable=True)
            for module in model.modules():
                if isinstance(module, nn.LayerNorm):  # ONNX's LayerNormalization takes one type: float32
                    module.register_forward_pre_hook(lambda m, args: (args[0].to(m.weight.dtype), *args[1:]))
        self.model = model
        self.input_names = [m for m in ("video", "audio") if any(e.modality == m for e in model.experts.values())]
        self.tasks = list(model.tasks)

    @property
    def output_names(self) -> list[str]:
        return ["logits"] if self.tasks == ["class"] else self.tasks

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with autocast(self.precision, inputs[0].device):
            out = self.model(**dict(zip(self.input_names, inputs)))
        out = [out[task] for task in self.tasks] if isinstance(out, dict) else [out]
        return tuple(logits.float() for logits in out)

    def example_inputs(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """Random inputs of the graph's shapes (standard normal, as normalised clips and log-mel features are)."""
        c = self.model.config
        shapes = {
            "video": (batch, 3, c.num_frames, c.img_size, c.img_size),
            "audio": (batch, c.audio_frames, c.num_mel_bins),
        }
        generator = torch.Generator().manual_seed(INPUT_SEED)
        return tuple(torch.randn(shapes[name], generator=generator).to(device) for name in self.input_names)


def import_onnx():
    """``onnx`` and ``onnxruntime``, or a :class:`~ca2st.errors.ConfigError` naming the ``export`` extra."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ConfigError(f'ONNX export needs onnx and onnxruntime ({err}): pip install "ca2st[export]"') from err
    return onnx, onnxruntime


def check_options(format: str, batch: int, precision: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"export format must be one of {list(FORMATS)}, got {format!r}")
    if precision not in TOLERANCES:
        raise ConfigError(f"export precision must be one of {list(TOLERANCES)}, got {precision!r}")
    if batch < 1:
        raise ConfigError(f"export batch size must be at least 1, got {batch}")


def export_model(
    model: MultiExpertModel,
    path: str | Path,
    format: str = "onnx",
    batch: int = 1,
    precision: str = "fp32",
    verify: bool = True,
) -> ExportResult:
    """Write ``model`` as a fixed-shape ``format`` file (``"onnx"`` or ``"torchscript"``) for batch size ``batch``
    and check it against the model on a random input (``verify``); see the module docstring.

    The model is put in eval mode and exported on its device; it is not changed (fp16 exports a float16 copy).
    Raises :class:`~ca2st.errors.CheckpointError` when the file's outputs differ from the model's by more than
    :data:`TOLERANCES` (the file is kept, for inspection).
    """
    check_options(format, batch, precision)
    if format == "onnx":
        import_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(model.eval(), precision).eval()
    inputs = graph.example_inputs(batch, next(model.parameters()).device)
    previous = attention_backend()
    set_attention_backend("sdpa")
    try:
        with torch.no_grad():
            expected = ExportGraph(model)(*inputs)  # float32, whatever the precision
            exporter = write_onnx(graph, inputs, path) if format == "onnx" else write_torchscript(graph, inputs, path)
    finally:
        set_attention_backend(previous)
    diff = float("nan")
    if verify:
        actual = run_onnx(path, graph.input_names, inputs) if format == "onnx" else run_torchscript(path, inputs)
        diff = max((a.float().cpu() - e.float().cpu()).abs().max().item() for a, e in zip(actual, expected))
    tolerance = TOLERANCES[precision]
    if precision != "fp32":
        tolerance *= max(1.0, max(e.abs().max().item() for e in expected))
    result = ExportResult(
        path=path,
        format=format,
        precision=precision,
        exporter=exporter,
        inputs={name: tuple(x.shape) for name, x in zip(graph.input_names, inputs)},
        outputs=graph.output_names,
        max_abs_diff=diff,
        tolerance=tolerance,
    )
    log.info("exported %s", result.summary())
    if verify and not diff <= result.tolerance:
        raise CheckpointError(
            f"{path}: the exported {format} graph's outputs differ from the PyTorch model's by {diff:.3g}, more than "
            f"the {precision} tolerance {result.tolerance:.3g}; the file is kept for inspection, but do not use it"
        )
    return result


def write_onnx(graph: ExportGraph, inputs: tuple[torch.Tensor, ...], path: Path) -> str:
    """Export with ``torch.export`` (``dynamo=True``), else the TorchScript-based exporter; returns which."""
    names = dict(input_names=graph.input_names, output_names=graph.output_names)
    try:
        program = torch.onnx.export(graph, inputs, dynamo=True, verbose=False, **names)
        program.save(str(path))
        return "torch.export"
    except Exception as err:  # noqa: BLE001 - any capture failure falls back, and says why
        log.warning(
            "torch.export could not capture the model (%s: %s); falling back to the TorchScript-based ONNX exporter "
            "(dynamo=False, opset %d)",
            type(err).__name__,
            err,
            FALLBACK_OPSET,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: the graph is fixed
        torch.onnx.export(graph, inputs, str(path), dynamo=False, opset_version=FALLBACK_OPSET, **names)
    return "torchscript-based"


def write_torchscript(graph: ExportGraph, inputs: tuple[torch.Tensor, ...], path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(graph, inputs, check_trace=False)
    traced.save(str(path))
    return "torch.jit.trace"


def run_onnx(path: Path, names: list[str], inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """The ONNX file's outputs on ``inputs``, computed by onnxruntime on CPU."""
    _, onnxruntime = import_onnx()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: x.detach().cpu().numpy() for name, x in zip(names, inputs)}
    return [torch.from_numpy(out) for out in session.run(None, feeds)]


def run_torchscript(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return list(module(*(x.cpu() for x in inputs)))


def default_path(checkpoint: str | Path, format: str, batch: int, precision: str) -> Path:
    """Where ``ca2st export`` writes without ``--out``: next to the checkpoint, named after it and the options."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}-b{batch}-{precision}{FORMATS[format]}")
