"""Evaluation: metrics and counts over the union of the shards, exclusion, duplicates, exact distributed runs."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from eval_toys import C, ToyDataset, ToyModel, make_video, toy
from torch.utils.data import DataLoader, DistributedSampler

import ca2st
from ca2st import metrics as M
from ca2st.data.datasets import Annotations, Sample, VideoDataset, collate
from ca2st.data.recipe import InputRecipe
from ca2st.engine.data import make_sampler, make_transform
from ca2st.engine.distributed import ShardedEvalSampler
from ca2st.engine.evaluate import evaluate

# --------------------------------------------------------------------------------------------- metrics


def test_metrics_and_counts_over_view_averaged_probabilities():
    logits, targets = toy(n=6, views=3)
    res = evaluate(
        ToyModel(),
        DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate),
        progress=False,
        dataset="toy",
        model_name="m",
        run_name="r",
    )
    expected = torch.stack([lg.softmax(-1).mean(0) for lg in logits])
    torch.testing.assert_close(res.probs["class"], expected)
    assert res.num_views == 3 and res.tasks == ["class"] and not res.composition
    assert res.metrics["top1"] == M.accuracy(expected, torch.tensor(targets))
    assert res.metrics["mean_class_acc"] == pytest.approx(M.mean_class_accuracy(expected, torch.tensor(targets)))
    assert res.ids == [f"s{i}" for i in range(6)] and res.indices.tolist() == list(range(6))
    assert res.counts == {"total": 6, "evaluated": 6, "excluded": 0, "unlabelled": 0, "unreachable": 0, "scored": 6}
    assert (res.dataset, res.model, res.run) == ("toy", "m", "r")


def test_single_view_items_and_composition():
    logits, targets = toy(n=5, views=1, composition=True)
    res = evaluate(
        ToyModel(composition=True),
        DataLoader(ToyDataset(logits, targets), batch_size=2, collate_fn=collate),
        progress=False,
    )
    assert res.tasks == ["verb", "noun"] and res.composition
    verb = torch.stack([lg[0, :3].softmax(-1) for lg in logits])
    noun = torch.stack([lg[0, 3:7].softmax(-1) for lg in logits])
    torch.testing.assert_close(res.probs["verb"], verb)
    vt = torch.tensor([t["verb"] for t in targets])
    nt = torch.tensor([t["noun"] for t in targets])
    expected = M.epic_accuracy(verb, noun, vt, nt)
    for k, v in expected.items():
        assert res.metrics[k] == v
    assert res.metrics["action_top1"] == ((verb.argmax(1) == vt) & (noun.argmax(1) == nt)).float().mean().item()
    assert "verb_mean_class_acc" in res.metrics and "noun_mean_class_acc" in res.metrics
    assert "action" in res.summary()


def test_real_model_in_fp16_through_evaluate():
    model = ca2st.build_model("cast_b16", embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32, num_classes=C)
    loader = [(torch.randn(2, 1, 3, 4, 32, 32), None, torch.tensor([0, 1]), {"index": torch.arange(2)})]
    res = evaluate(model, loader, progress=False, precision="fp16")
    assert res.tasks == ["class"] and res.probs["class"].shape == (2, C) and res.counts["scored"] == 2


# --------------------------------------------------------------------------------------------- exclusion


def test_excluded_samples_are_reported_not_counted():
    logits, targets = toy(n=6, views=2)
    res = evaluate(
        ToyModel(),
        DataLoader(ToyDataset(logits, targets, excluded=[1, 4]), batch_size=3, collate_fn=collate),
        progress=False,
    )
    assert res.counts["excluded"] == 2 and res.counts["evaluated"] == 4 and res.counts["total"] == 6
    assert [e["id"] for e in res.excluded] == ["s1", "s4"]
    assert res.excluded[0]["error"] == "s1.mp4: broken" and res.excluded[0]["index"] == 1
    assert res.ids == ["s0", "s2", "s3", "s5"]
    kept = [0, 2, 3, 5]
    expected = torch.stack([logits[i].softmax(-1).mean(0) for i in kept])
    assert res.metrics["top1"] == M.accuracy(expected, torch.tensor([targets[i] for i in kept]))
    text = res.summary()
    assert "2 excluded" in text and "s1.mp4: broken" in text


def test_unlabelled_samples_get_predictions_but_no_metrics():
    logits, targets = toy(n=4, views=1)
    targets[2] = -1
    res = evaluate(
        ToyModel(), DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate), progress=False
    )
    assert res.counts["unlabelled"] == 1 and res.counts["scored"] == 3 and res.probs["class"].shape[0] == 4
    keep = [0, 1, 3]
    expected = torch.stack([logits[i][0].softmax(-1) for i in keep])
    assert res.metrics["top1"] == M.accuracy(expected, torch.tensor([targets[i] for i in keep]))


def test_excluded_through_the_real_dataset(tmp_path):
    for name in ("a", "b"):
        make_video(tmp_path / f"{name}.mp4")
    ann = Annotations(
        [Sample("a", "a.mp4", 1), Sample("gone", "missing.mp4", 2), Sample("b", "b.mp4", 3)],
        C,
        "test",
        sampler="segment",
    )
    recipe = InputRecipe(sampler="segment", num_frames=4, img_size=32, test_clips=2)
    ds = VideoDataset(
        ann, tmp_path, make_sampler(recipe, train=False), make_transform(recipe, train=False), on_error="exclude"
    )
    model = ca2st.build_model("cast_b16", embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32, num_classes=C)
    res = evaluate(model, DataLoader(ds, batch_size=2, collate_fn=collate), progress=False)
    assert res.ids == ["a", "b"] and res.num_views == 2
    assert [Path(p) for p in res.paths] == [tmp_path / "a.mp4", tmp_path / "b.mp4"]  # meta['path'] carried
    assert res.excluded[0]["id"] == "gone" and "missing.mp4" in res.excluded[0]["error"]
    assert res.counts["scored"] == 2


def test_nothing_evaluated_keeps_the_model_classes():
    model = ca2st.build_model("cast_b16", embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32, num_classes=C)
    res = evaluate(model, [], progress=False)
    assert res.tasks == ["class"] and res.probs["class"].shape == (0, C) and res.counts["total"] == 0


# --------------------------------------------------------------------------------------------- union of shards


def test_duplicates_from_padding_are_counted_once():
    logits, targets = toy(n=5, views=1)
    ds = ToyDataset(logits, targets, paths=True)
    once = evaluate(ToyModel(), DataLoader(ds, batch_size=5, collate_fn=collate), progress=False)
    twice = evaluate(
        ToyModel(), DataLoader(ds, batch_size=5, sampler=[3, 1, 2, 0, 4, 0, 1], collate_fn=collate), progress=False
    )
    assert twice.counts == once.counts and twice.metrics == once.metrics
    assert twice.ids == once.ids and twice.paths == once.paths == [f"/videos/s{i}.mp4" for i in range(5)]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        logits, targets = toy(n=9, views=2, seed=3, composition=True)
        ds = ToyDataset(logits, targets, excluded=[4])
        sharded = DataLoader(ds, batch_size=2, sampler=ShardedEvalSampler(ds), collate_fn=collate)
        res = evaluate(ToyModel(composition=True), sharded, progress=False)
        padded = DataLoader(
            ds, batch_size=2, sampler=DistributedSampler(ds, shuffle=False), collate_fn=collate
        )  # pads 9 -> 10
        res_pad = evaluate(ToyModel(composition=True), padded, progress=False)
        torch.save(
            {
                "metrics": res.metrics,
                "counts": res.counts,
                "indices": res.indices,
                "ids": res.ids,
                "excluded": res.excluded,
                "verb": res.probs["verb"],
                "local": len(sharded.sampler),
                "pad_metrics": res_pad.metrics,
                "pad_counts": res_pad.counts,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path):
    world = 2
    mp.spawn(_dist_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    logits, targets = toy(n=9, views=2, seed=3, composition=True)
    single = evaluate(
        ToyModel(composition=True),
        DataLoader(ToyDataset(logits, targets, excluded=[4]), batch_size=3, collate_fn=collate),
        progress=False,
    )
    outs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert [o["local"] for o in outs] == [5, 4]  # disjoint shards, no padding
    for o in outs:
        assert o["metrics"] == single.metrics
        assert (
            o["counts"]
            == single.counts
            == {"total": 9, "evaluated": 8, "excluded": 1, "unlabelled": 0, "unreachable": 0, "scored": 8}
        )
        assert o["indices"].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
        assert o["ids"] == single.ids
        assert o["excluded"] == single.excluded == [{"index": 4, "id": "s4", "error": "s4.mp4: broken"}]
        torch.testing.assert_close(o["verb"], single.probs["verb"])
        # DistributedSampler's padding duplicate is dropped: still exact
        assert o["pad_metrics"] == single.metrics and o["pad_counts"] == single.counts
