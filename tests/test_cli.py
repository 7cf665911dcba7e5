import subprocess
import sys

import pytest

from ca2st import cli
from ca2st.cli import main
from ca2st.engine.config import parse_overrides

HEAVY = ("torch", "transformers", "matplotlib", "tensorboard", "ca2st.models", "gradio")


def test_info_prints_counts(capsys):
    assert main(["info", "cast_b16"]) == 0
    out = capsys.readouterr().out
    assert "217,402,384 total, 45,378,832 trainable" in out
    assert "781.0 GFLOPs" in out
    assert "exchange spatial_temporal in 12 layers" in out


def test_info_with_overrides(capsys):
    assert main(["info", "cast_b16_ek100", "num_frames=8", "depth=4"]) == 0
    out = capsys.readouterr().out
    assert "4 time slots x 196 positions" in out and "in 4 layers" in out
    assert main(["info", "cast_b16", "depth=1", "num_frames=2"]) == 0
    assert "1 time slot x 196 positions" in (out := capsys.readouterr().out) and "in 1 layer\n" in out


def test_info_names_each_experts_architecture_statistics_and_licence(capsys):
    assert main(["info", "cast_b16"]) == 0
    out = capsys.readouterr().out
    assert (
        "expert spatial   clip: 8 time slots x 196 positions + 1 special token; the recipe's ImageNet statistics" in out
    )
    assert "weights MIT (OpenAI CLIP)" in out and "videomae: 8 time slots x 196 positions; the recipe's ImageNet" in out
    assert main(["info", "cava_b16", "own_normalization=true"]) == 0
    out = capsys.readouterr().out
    assert "clip: 8 time slots x 196 positions + 1 special token; its own CLIP statistics" in out
    assert "expert audio     ast: 1 time slot x 468 positions + 2 special tokens; log-mel input" in out


def test_bad_override_is_a_readable_error(capsys):
    assert main(["info", "cast_b16", "num_class=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown model option(s) ['num_class']" in err and "num_classes" in err
    assert main(["info", "cast_b16", "oops"]) == 2
    assert "expected key=value, got 'oops'" in capsys.readouterr().err


def test_one_override_parser_for_the_cli_and_python():
    # YAML values, as in recipes: the same parser serves `ca2st info`, `ca2st train` and ca2st.load_config
    assert parse_overrides(["a=3", "b=0.5", "c=true", "d=name", "e=[1, 2]", "f=5e-4", "g=null"]) == {
        "a": 3,
        "b": 0.5,
        "c": True,
        "d": "name",
        "e": [1, 2],
        "f": 5e-4,
        "g": None,
    }
    assert parse_overrides({"data.batch_size": 4}) == {"data.batch_size": 4}


def test_console_entry_point_runs_as_module():
    out = subprocess.run(
        [sys.executable, "-m", "ca2st", "info", "cast_b16"], capture_output=True, text=True, check=True
    ).stdout
    assert "45,378,832 trainable" in out


def _heavy_modules_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has imported after running ``code``."""
    script = f"import sys\n{code}\nprint('imported:', *[m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    last = out.splitlines()[-1].split()
    assert last[0] == "imported:", out
    return last[1:]


def test_help_imports_neither_torch_nor_models():
    commands = [
        "info",
        "train",
        "eval",
        "predict",
        "extract",
        "explain",
        "export",
        "report",
        "demo",
        "serve",
        "bench",
        "data",
    ]
    code = (
        "import ca2st.cli\n"
        f"for argv in [['--help'], *[[c, '--help'] for c in {commands!r}]]:\n"
        "    try:\n"
        "        ca2st.cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass"
    )
    assert _heavy_modules_after(code) == []
    out = subprocess.run([sys.executable, "-m", "ca2st", "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: ca2st") and "bench" in out


def test_import_is_lazy():
    assert _heavy_modules_after("import ca2st") == []


def test_public_names_resolve_on_first_use():
    import ca2st
    from ca2st.models import build_model
    from ca2st.prediction import predict

    assert ca2st.build_model is build_model
    assert ca2st.predict is predict and ca2st.prediction.predict is predict  # the module has its own name
    assert {"build_model", "load_config", "predict", "errors", "__version__"} <= set(dir(ca2st)) & set(ca2st.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ca2st.nope


@pytest.mark.parametrize("device,applied", [("cpu", True), ("cuda", False)])
def test_cpu_training_keeps_freed_host_memory(device, applied, monkeypatch):
    calls = []  # a process-wide setting: recorded, not applied, in pytest
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    cli.keep_freed_host_memory(device)
    assert calls == ([True] if applied else [])


def test_every_bench_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # one line: argparse wraps the help texts
    assert "--model MODEL preset to measure (default cast_b16" in out
    assert "--batch BATCH clips per forward and per training step" in out
    assert "--device DEVICE cpu, cuda, or auto" in out
