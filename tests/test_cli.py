import subprocess
import sys

from ca2st.cli import main, parse_overrides


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


def test_bad_override_is_a_readable_error(capsys):
    assert main(["info", "cast_b16", "num_class=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown model option(s) ['num_class']" in err and "num_classes" in err
    assert main(["info", "cast_b16", "oops"]) == 2
    assert "expected key=value, got 'oops'" in capsys.readouterr().err


def test_parse_overrides_literals():
    assert parse_overrides(["a=3", "b=0.5", "c=True", "d=name", "e=(1, 2)"]) == {
        "a": 3, "b": 0.5, "c": True, "d": "name", "e": (1, 2)}


def test_console_entry_point_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "ca2st", "info", "cast_b16"], capture_output=True, text=True,
                         check=True).stdout
    assert "45,378,832 trainable" in out
