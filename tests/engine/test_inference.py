"""Multi-view inference: softmax per view averaged per video, batch shapes, exclusion, precisions, paths."""

import pytest
import torch
from eval_toys import C, ToyDataset, ToyModel, toy
from torch.utils.data import DataLoader

import ca2st
from ca2st.data.datasets import collate
from ca2st.engine.inference import ViewOutputs, run_views
from ca2st.errors import ConfigError


def test_views_are_averaged_after_softmax():
    logits, targets = toy(n=6, views=3)
    model = ToyModel()
    out = run_views(model, DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate), progress=False)
    assert isinstance(out, ViewOutputs)
    torch.testing.assert_close(out.probs["class"], torch.stack([lg.softmax(-1).mean(0) for lg in logits]))
    # the model saw all views of a batch at once: (B·V) rows
    assert [c["batch"] for c in model.calls] == [12, 6]
    assert out.views == 3
    assert out.ids == [f"s{i}" for i in range(6)] and out.indices.tolist() == list(range(6))
    assert out.targets["class"].tolist() == targets
    assert out.paths == [None] * 6 and out.excluded == []


def test_mean_of_softmax_differs_from_softmax_of_mean():
    # view 0 extremely confident in class 0, views 1-2 fairly confident in class 1: averaging logits picks class 0
    # (10/3 > 2), averaging probabilities (the official rule) picks class 1 (≈0.56 > ≈0.36).
    lg = torch.tensor([[10.0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0], [0, 3.0, 0, 0, 0]])
    video = lg[None, :, None, None, None, :].expand(1, 3, 3, 2, 1, C).clone()
    out = run_views(ToyModel(), [(video, None, torch.tensor([1]), {"index": torch.tensor([7])})], progress=False)
    assert out.probs["class"][0].argmax() == 1
    assert lg.mean(0).argmax() == 0  # averaging logits would have said class 0
    torch.testing.assert_close(out.probs["class"][0], lg.softmax(-1).mean(0))
    assert out.indices.tolist() == [7] and out.ids == ["7"]  # ids default to the dataset index


def test_one_batch_contract():
    video = torch.zeros(2, 1, 3, 2, 1, 8)
    meta = {"index": torch.tensor([0, 1])}
    for batch, message in (
        ((video, torch.tensor([0, 1])), "loader batches must be"),
        ((video, None, torch.tensor([0, 1])), "loader batches must be"),
        ((video[:, 0], None, torch.tensor([0, 1]), meta), r"must be \(batch, views, C, T, H, W\)"),
        ((video, None, torch.tensor([0, 1]), {}), "dataset 'index'"),
    ):
        with pytest.raises(ConfigError, match=message):
            run_views(ToyModel(), [batch], progress=False)


def test_composition_outputs_per_task():
    logits, targets = toy(n=5, views=2, composition=True)
    out = run_views(
        ToyModel(composition=True),
        DataLoader(ToyDataset(logits, targets), batch_size=2, collate_fn=collate),
        progress=False,
    )
    assert list(out.probs) == ["verb", "noun"]
    torch.testing.assert_close(out.probs["noun"], torch.stack([lg[:, 3:7].softmax(-1).mean(0) for lg in logits]))
    assert out.targets["verb"].tolist() == [t["verb"] for t in targets]
    with pytest.raises(ConfigError, match="different tasks"):
        run_views(
            ToyModel(composition=True),
            DataLoader(ToyDataset(*toy(n=2)), batch_size=2, collate_fn=collate),
            progress=False,
        )


def test_real_model_flattening_and_precisions():
    torch.manual_seed(0)
    model = ca2st.build_model("cast_b16", embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32, num_classes=C)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    videos = torch.randn(3, 2, 3, 4, 32, 32)  # 3 samples × 2 views
    loader = [
        (
            videos,
            None,
            torch.tensor([0, 1, 2]),
            {"index": torch.arange(3), "id": ["a", "b", "c"], "excluded": torch.zeros(3), "error": [""] * 3},
        )
    ]
    out = run_views(model, loader, progress=False)
    model.eval()
    with torch.no_grad():
        expected = torch.stack([model(videos[i]).softmax(-1).mean(0) for i in range(3)])
    torch.testing.assert_close(out.probs["class"], expected, atol=1e-5, rtol=1e-4)
    for precision in ("bf16", "fp16"):
        low = run_views(model, loader, progress=False, precision=precision)
        assert low.probs["class"].dtype == torch.float32  # the softmax is taken in float32
        torch.testing.assert_close(low.probs["class"], expected, atol=0.05, rtol=0.05)
    with pytest.raises(ConfigError, match="precision"):
        run_views(model, loader, progress=False, precision="fp8")


def test_autocast_dtype_follows_the_precision():
    logits, targets = toy(n=2, views=1)
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model = ToyModel()
        run_views(
            model,
            DataLoader(ToyDataset(logits, targets), batch_size=2, collate_fn=collate),
            progress=False,
            precision=precision,
        )
        assert model.calls[0]["dtype"] == dtype


def test_time_codes_and_audio_are_passed_flattened():
    logits, targets = toy(n=3, views=2)
    model = ToyModel(time_codes=True)

    class WithAudio(ToyDataset):
        def __getitem__(self, i):
            video, _, target, meta = super().__getitem__(i)
            return video, torch.zeros(2, 16, 128), target, meta

    run_views(model, DataLoader(WithAudio(logits, targets), batch_size=3, collate_fn=collate), progress=False)
    assert model.calls[0]["batch"] == 6 and model.calls[0]["times"] == (6, 2, 2)
    assert model.calls[0]["audio"] == (6, 16, 128)


def test_excluded_items_are_listed_not_run_and_paths_are_carried():
    logits, targets = toy(n=6, views=2)
    model = ToyModel()
    out = run_views(
        model,
        DataLoader(ToyDataset(logits, targets, excluded=[1, 4], paths=True), batch_size=3, collate_fn=collate),
        progress=False,
    )
    assert [c["batch"] for c in model.calls] == [4, 4]  # 2 kept items × 2 views per batch
    assert out.ids == ["s0", "s2", "s3", "s5"]
    assert out.paths == [f"/videos/s{i}.mp4" for i in (0, 2, 3, 5)]
    assert out.excluded == [
        {"index": 1, "id": "s1", "error": "s1.mp4: broken"},
        {"index": 4, "id": "s4", "error": "s4.mp4: broken"},
    ]
    assert model.training  # the model's mode is restored
