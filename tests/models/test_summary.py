"""Model summaries: the official parameter counts of every preset and the forward's GFLOPs."""

import pytest

from ca2st.models.summary import summarize


@pytest.mark.parametrize(
    "name,trainable,total", [("cast_b16", 45_378_832, 217_402_384), ("cast_b16_ek100", 44_784_781, 216_808_333)]
)
def test_official_parameter_counts(name, trainable, total):
    s = summarize(name)
    assert s.trainable_params == trainable
    assert s.total_params == total


def test_ssv2_head_count():
    assert summarize("cast_b16", num_classes=174).trainable_params == 45_205_038


def test_flops_of_the_base_model():
    # every matmul of the forward, CLIP's per-frame attention included
    assert summarize("cast_b16").gflops == pytest.approx(781.0, abs=0.1)


@pytest.mark.parametrize(
    "name,classes,expected",
    [
        ("cava_b16", 44, 43_820_204),  # the reference CAVA with 400-frame audio and time codes
        ("cast_r50_b16_ek100", None, 19_772_173),  # the reference ResNet-50 + VideoMAE composition model
    ],
)
def test_reference_parameter_counts(name, classes, expected):
    kw = {"num_classes": classes} if classes else {}
    assert summarize(name, **kw).trainable_params == expected


def test_paper_parameter_counts():
    assert abs(summarize("cava_b16", num_classes=44).trainable_params - 44e6) <= 1.5e6
    ca2st_count = summarize("ca2st_b16", num_classes=44).trainable_params
    assert ca2st_count == 61_977_068 and abs(ca2st_count - 62e6) <= 3e6
