"""ca2st export: ONNX and TorchScript graphs of tiny CAST, CAVA and CA²ST models, checked against PyTorch."""

import logging
import sys

import pytest
import torch

import ca2st
from ca2st import export
from ca2st.errors import CheckpointError, ConfigError
from ca2st.models.attention import attention_backend, set_attention_backend

from helpers import randomize_

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

TINY = dict(
    embed_dim=64, depth=4, num_heads=4, num_frames=4, img_size=64, num_classes=7, audio_frames=46, num_mel_bins=32
)


def tiny(name, **kw):
    extra = {"audio_layers": 2} if name.startswith("ca2st") else {}
    torch.manual_seed(0)
    return randomize_(ca2st.build_model(name, **{**TINY, **extra, **kw})).eval()


def run_session(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [o.name for o in session.get_inputs()], [o.name for o in session.get_outputs()], session.run(None, feeds)


@pytest.mark.parametrize("name", ["cast_b16", "cava_b16", "ca2st_b16"])
def test_onnx_graph_matches_pytorch_in_onnxruntime(name, tmp_path):
    model = tiny(name)
    set_attention_backend("auto")
    result = ca2st.export_model(model, tmp_path / "m.onnx", batch=2)
    assert attention_backend() == "auto"  # the SDPA switch is undone
    assert result.exporter == "torch.export" and result.max_abs_diff <= 1e-4
    audio = model.needs_audio
    assert result.inputs == {"video": (2, 3, 4, 64, 64), **({"audio": (2, 46, 32)} if audio else {})}
    # an independent run: our own inputs, our own session, the model's own forward
    video, sound = torch.randn(2, 3, 4, 64, 64), torch.randn(2, 46, 32)
    feeds = {"video": video.numpy(), **({"audio": sound.numpy()} if audio else {})}
    inputs, outputs, (logits,) = run_session(result.path, feeds)
    assert inputs == list(feeds) and outputs == ["logits"]
    with torch.no_grad():
        expected = model(video, sound if audio else None)
    assert expected.abs().max() > 0.1  # the comparison is not between zeros
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)
    graph = onnx.load(str(result.path))
    ops = {node.op_type for node in graph.graph.node}
    assert {"MatMul", "Softmax"} <= ops and all(node.domain in ("", "ai.onnx") for node in graph.graph.node)


def test_composition_model_has_one_named_output_per_task(tmp_path):
    model = tiny("cast_b16_ek100", composition_classes={"verb": 5, "noun": 9})
    result = ca2st.export_model(model, tmp_path / "ek.onnx")
    assert result.outputs == ["verb", "noun"]
    video = torch.randn(1, 3, 4, 64, 64)
    _, outputs, (verb, noun) = run_session(result.path, {"video": video.numpy()})
    assert outputs == ["verb", "noun"]
    with torch.no_grad():
        expected = model(video)
    torch.testing.assert_close(torch.from_numpy(verb), expected["verb"], atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.from_numpy(noun), expected["noun"], atol=1e-4, rtol=0)


def test_torchscript_matches_pytorch(tmp_path):
    model = tiny("cava_b16")
    result = ca2st.export_model(model, tmp_path / "m.pt", format="torchscript")
    assert result.max_abs_diff <= 1e-4 and result.outputs == ["logits"]
    video, audio = torch.randn(1, 3, 4, 64, 64), torch.randn(1, 46, 32)
    with torch.no_grad():
        (logits,) = torch.jit.load(str(result.path))(video, audio)
        torch.testing.assert_close(logits, model(video, audio), atol=1e-4, rtol=0)


def test_fp16_graph_is_close_to_the_fp32_model_with_float32_inputs_and_outputs(tmp_path):
    model = tiny("cast_b16")
    weight = model.head.state_dict()
    result = ca2st.export_model(model, tmp_path / "m16.onnx", precision="fp16")
    assert result.exporter == "torch.export" and 1e-6 < result.max_abs_diff <= result.tolerance
    assert all(w.dtype == torch.float32 for w in model.parameters())  # the model itself is not changed
    torch.testing.assert_close(model.head.state_dict(), weight)
    video = torch.randn(1, 3, 4, 64, 64)
    _, _, (logits,) = run_session(result.path, {"video": video.numpy()})
    with torch.no_grad():
        expected = model(video)
    assert logits.dtype == "float32"
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-2 * expected.abs().max().item(), rtol=0)
    graph = onnx.load(str(result.path))
    float16 = onnx.TensorProto.FLOAT16
    assert any(init.data_type == float16 for init in graph.graph.initializer)  # weights stored in float16


def test_falls_back_to_the_torchscript_exporter_and_says_so(tmp_path, monkeypatch, caplog):
    real = torch.onnx.export

    def no_dynamo(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("cannot capture")
        return real(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    with caplog.at_level(logging.WARNING, logger="ca2st.export"):
        result = ca2st.export_model(tiny("cast_b16"), tmp_path / "m.onnx")
    assert result.exporter == "torchscript-based" and result.max_abs_diff <= 1e-4
    assert "falling back to the TorchScript-based ONNX exporter" in caplog.text and "cannot capture" in caplog.text


def test_a_graph_that_differs_from_pytorch_fails_and_the_backend_comes_back(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "run_torchscript", lambda path, inputs: [torch.full((1, 7), 1e3)])
    set_attention_backend("auto")
    with pytest.raises(CheckpointError, match=r"m\.pt: the exported torchscript graph's outputs differ .* tolerance"):
        ca2st.export_model(tiny("cast_b16"), tmp_path / "m.pt", format="torchscript")
    assert attention_backend() == "auto"


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "ca2st\[export\]"'):
        ca2st.export_model(tiny("cast_b16"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_options_are_config_errors(tmp_path):
    model = tiny("cast_b16")
    with pytest.raises(ConfigError, match="format must be one of"):
        ca2st.export_model(model, tmp_path / "m", format="tflite")
    with pytest.raises(ConfigError, match="batch size must be at least 1"):
        ca2st.export_model(model, tmp_path / "m", batch=0)


def test_cli_exports_a_checkpoint_folder_and_prints_the_difference(tmp_path, capsys):
    from ca2st.cli import main

    checkpoint = ca2st.save_model(tiny("cava_b16"), tmp_path / "model")
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "model-b2-fp32.onnx"
    assert path.exists() and str(path) in out and "max abs difference to the float32 PyTorch model:" in out
    inputs, outputs, (logits,) = run_session(
        path, {"video": torch.zeros(2, 3, 4, 64, 64).numpy(), "audio": torch.zeros(2, 46, 32).numpy()}
    )
    assert inputs == ["video", "audio"] and logits.shape == (2, 7)


def test_cli_fails_with_a_clear_message_when_the_file_differs_from_pytorch(tmp_path, capsys, monkeypatch):
    from ca2st.cli import main

    checkpoint = ca2st.save_model(tiny("cast_b16"), tmp_path / "model")
    monkeypatch.setattr(export, "run_torchscript", lambda path, inputs: [torch.full((1, 7), 1e3)])
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "model-b1-fp32.pt: the exported torchscript graph's outputs differ" in err
    assert (tmp_path / "model-b1-fp32.pt").exists()  # kept for inspection
