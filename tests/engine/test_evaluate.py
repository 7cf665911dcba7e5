"""Evaluation: view aggregation, exclusion, transfer mapping, exact distributed shards, result files, report."""

import csv
import json
import os
import socket
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

import ca2st
from ca2st import metrics as M
from ca2st.data.datasets import Annotations, Sample, VideoDataset
from ca2st.engine.evaluate import (
    EvalResult,
    ShardedEvalSampler,
    evaluate,
    invert_class_mapping,
    report,
)
from ca2st.errors import ConfigError

C = 5  # classes of the toy model


class ToyModel(nn.Module):
    """Logits = the first C pixels of the first frame's first row: the test controls every view's logits."""

    def __init__(self, composition=False, time_codes=False):
        super().__init__()
        self.composition = composition
        self.time_codes = object() if time_codes else None
        self.calls = []

    def forward(self, video, audio=None, times=None):
        self.calls.append({"batch": video.shape[0], "times": None if times is None else tuple(times.shape),
                           "audio": None if audio is None else tuple(audio.shape)})
        row = video[:, 0, 0, 0, :]
        if self.composition:
            return {"verb": row[:, :3], "noun": row[:, 3:7]}
        return row[:, :C]


class ToyDataset(Dataset):
    """Items as VideoDataset collates them; ``logits[i]`` is ``(V, width)``, written into the video."""

    def __init__(self, logits, targets, excluded=(), views=None):
        self.logits, self.targets, self.excluded = logits, targets, set(excluded)
        self.views = views

    def __len__(self):
        return len(self.logits)

    def __getitem__(self, i):
        lg = self.logits[i]
        v, w = lg.shape
        video = torch.zeros(v, 3, 2, 1, max(w, 8))
        video[:, 0, 0, 0, :w] = lg
        if self.views == 1:
            video = video[0]
        bad = i in self.excluded
        target = self.targets[i]
        if isinstance(target, dict):
            target = {k: torch.tensor(-1 if bad else t) for k, t in target.items()}
        else:
            target = torch.tensor(-1 if bad else target)
        meta = {"index": i, "requested": i, "id": f"s{i}", "excluded": int(bad),
                "error": f"s{i}.mp4: broken" if bad else "", "intervals": torch.zeros(v, 2, 2)}
        return video, torch.empty(0), target, meta


def _toy(n=7, views=3, seed=0, composition=False):
    g = torch.Generator().manual_seed(seed)
    width = 7 if composition else C
    logits = [3 * torch.randn(views, width, generator=g) for _ in range(n)]
    if composition:
        targets = [{"verb": int(torch.randint(3, (), generator=g)), "noun": int(torch.randint(4, (), generator=g))}
                   for _ in range(n)]
    else:
        targets = [int(torch.randint(C, (), generator=g)) for _ in range(n)]
    return logits, targets


# --------------------------------------------------------------------------------------------- aggregation


def test_views_are_averaged_after_softmax():
    logits, targets = _toy(n=6, views=3)
    model = ToyModel()
    res = evaluate(model, DataLoader(ToyDataset(logits, targets), batch_size=4), progress=False)
    expected = torch.stack([lg.softmax(-1).mean(0) for lg in logits])
    torch.testing.assert_close(res.probs["class"], expected)
    # the model saw all views of a batch at once: (B·V) rows
    assert [c["batch"] for c in model.calls] == [12, 6]
    assert res.num_views == 3
    assert res.metrics["top1"] == M.accuracy(expected, torch.tensor(targets))
    assert res.metrics["mean_class_acc"] == pytest.approx(M.mean_class_accuracy(expected, torch.tensor(targets)))
    assert res.ids == [f"s{i}" for i in range(6)] and res.indices.tolist() == list(range(6))
    assert res.counts == {"total": 6, "evaluated": 6, "excluded": 0, "unlabelled": 0, "unreachable": 0,
                          "scored": 6}


def test_mean_of_softmax_differs_from_softmax_of_mean():
    # view 0 extremely confident in class 0, views 1-2 fairly confident in class 1: averaging logits picks class 0
    # (10/3 > 2), averaging probabilities (the official rule) picks class 1 (≈0.56 > ≈0.36).
    lg = torch.tensor([[10.0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0], [0, 3.0, 0, 0, 0]])
    res = evaluate(ToyModel(), [(lg[None, :, None, None, None, :].expand(1, 3, 3, 2, 1, C).clone(),
                                 torch.empty(1, 0), torch.tensor([1]))], progress=False)
    assert res.probs["class"][0].argmax() == 1
    assert lg.mean(0).argmax() == 0  # averaging logits would have said class 0
    torch.testing.assert_close(res.probs["class"][0], lg.softmax(-1).mean(0))


def test_single_view_items_and_composition():
    logits, targets = _toy(n=5, views=1, composition=True)
    res = evaluate(ToyModel(composition=True), DataLoader(ToyDataset(logits, targets, views=1), batch_size=2),
                   progress=False)
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


def test_real_model_flattening_matches_per_view_calls():
    torch.manual_seed(0)
    model = ca2st.build_model("cast_b16", embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32,
                              num_classes=C)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    videos = torch.randn(3, 2, 3, 4, 32, 32)  # 3 samples × 2 views
    loader = [(videos, torch.empty(3, 0), torch.tensor([0, 1, 2]),
               {"index": torch.arange(3), "id": ["a", "b", "c"], "excluded": torch.zeros(3), "error": [""] * 3})]
    res = evaluate(model, loader, progress=False)
    model.eval()
    with torch.no_grad():
        expected = torch.stack([model(videos[i]).softmax(-1).mean(0) for i in range(3)])
    torch.testing.assert_close(res.probs["class"], expected, atol=1e-5, rtol=1e-4)
    res16 = evaluate(model, loader, progress=False, precision="bf16")
    torch.testing.assert_close(res16.probs["class"], expected, atol=0.05, rtol=0.05)
    with pytest.raises(ConfigError):
        evaluate(model, loader, progress=False, precision="fp16")


def test_time_codes_and_audio_are_passed_flattened():
    logits, targets = _toy(n=3, views=2)
    model = ToyModel(time_codes=True)

    class WithAudio(ToyDataset):
        def __getitem__(self, i):
            video, _, target, meta = super().__getitem__(i)
            return video, torch.zeros(2, 16, 128), target, meta

    evaluate(model, DataLoader(WithAudio(logits, targets), batch_size=3), progress=False)
    assert model.calls[0] == {"batch": 6, "times": (6, 2, 2), "audio": (6, 16, 128)}


# --------------------------------------------------------------------------------------------- exclusion


def test_excluded_samples_are_reported_not_counted():
    logits, targets = _toy(n=6, views=2)
    model = ToyModel()
    res = evaluate(model, DataLoader(ToyDataset(logits, targets, excluded=[1, 4]), batch_size=3), progress=False)
    assert res.counts["excluded"] == 2 and res.counts["evaluated"] == 4 and res.counts["total"] == 6
    assert [e["id"] for e in res.excluded] == ["s1", "s4"]
    assert res.excluded[0]["error"] == "s1.mp4: broken" and res.excluded[0]["index"] == 1
    assert res.ids == ["s0", "s2", "s3", "s5"]
    # the model never saw the placeholders: 2 kept items × 2 views per batch
    assert [c["batch"] for c in model.calls] == [4, 4]
    kept = [0, 2, 3, 5]
    expected = torch.stack([logits[i].softmax(-1).mean(0) for i in kept])
    assert res.metrics["top1"] == M.accuracy(expected, torch.tensor([targets[i] for i in kept]))
    text = res.summary()
    assert "2 excluded" in text and "s1.mp4: broken" in text


def test_unlabelled_samples_get_predictions_but_no_metrics():
    logits, targets = _toy(n=4, views=1)
    targets[2] = -1
    res = evaluate(ToyModel(), DataLoader(ToyDataset(logits, targets), batch_size=4), progress=False)
    assert res.counts["unlabelled"] == 1 and res.counts["scored"] == 3 and res.probs["class"].shape[0] == 4
    keep = [0, 1, 3]
    expected = torch.stack([logits[i][0].softmax(-1) for i in keep])
    assert res.metrics["top1"] == M.accuracy(expected, torch.tensor([targets[i] for i in keep]))


def test_excluded_through_the_real_dataset(tmp_path):
    for name in ("a", "b"):
        _make_video(tmp_path / f"{name}.mp4")
    ann = Annotations([Sample("a", "a.mp4", 1), Sample("gone", "missing.mp4", 2), Sample("b", "b.mp4", 3)], C,
                      "test", sampler="segment")
    ds = VideoDataset(ann, tmp_path, num_frames=4, size=32, num_clips=2, num_crops=1, on_error="exclude")
    model = ca2st.build_model("cast_b16", embed_dim=32, depth=1, num_heads=2, num_frames=4, img_size=32,
                              num_classes=C)
    res = evaluate(model, DataLoader(ds, batch_size=2), progress=False)
    assert res.ids == ["a", "b"] and res.num_views == 2
    assert res.excluded[0]["id"] == "gone" and "missing.mp4" in res.excluded[0]["error"]
    assert res.counts["scored"] == 2


# --------------------------------------------------------------------------------------------- transfer


def test_transfer_mapping_merges_probabilities_and_reports_unreachable():
    # model classes 0..4 -> dataset classes: 0->1, 1->1, 2->0, 3->-1 (unmapped), 4->2 ; dataset has 4 classes
    # (class 3 has no model class: samples labelled 3 are unreachable)
    table = torch.tensor([1, 1, 0, -1, 2])
    logits = [torch.tensor([[2.0, 1.5, 0, 3.0, 0]]), torch.tensor([[0, 0, 2.0, 0, 0]]),
              torch.tensor([[0, 0, 0, 0, 1.0]]), torch.tensor([[1.0, 0, 0, 0, 0]])]
    targets = [1, 0, 0, 3]
    res = evaluate(ToyModel(), DataLoader(ToyDataset(logits, targets, views=1), batch_size=4), progress=False,
                   class_mapping=table, class_names=["zero", "one", "two", "three"])
    p = [lg[0].softmax(-1) for lg in logits]
    merged = torch.stack([torch.stack([q[2], q[0] + q[1], q[4], torch.tensor(0.0)]) for q in p])
    torch.testing.assert_close(res.probs["class"], merged)
    # sample 0: model argmax is class 3 (unmapped), but the merged dataset class 1 (0+1) wins -> correct
    assert res.probs["class"][0].argmax() == 1
    # sample 1: correct (2 -> 0); sample 2: predicts dataset 2, target 0 -> wrong; sample 3: unreachable
    assert res.counts["unreachable"] == 1 and res.counts["scored"] == 3
    assert res.metrics["top1"] == pytest.approx(2 / 3)
    tr = res.transfer
    assert tr["unmapped_model_classes"]["class"] == [3]
    assert tr["unmapped_dataset_classes"]["class"] == [3]
    assert tr["unreachable"] == [{"index": 3, "id": "s3"}]
    assert "unreachable" in res.summary()
    # the same through a dict (model class -> dataset class); missing keys are unmapped
    res2 = evaluate(ToyModel(), DataLoader(ToyDataset(logits, targets, views=1), batch_size=4), progress=False,
                    class_mapping={"class": {0: 1, 1: 1, 2: 0, 4: 2}}, class_names=["a", "b", "c", "d"])
    torch.testing.assert_close(res2.probs["class"], merged)
    assert res2.metrics == res.metrics


def test_transfer_mapping_composition_and_inversion():
    logits, targets = _toy(n=6, views=2, composition=True)
    verb_map = torch.tensor([2, 0, 1])  # a permutation of 3 verbs
    noun_map = {0: 0, 1: 1, 2: 2, 3: 3}  # identity
    mapped_targets = [{"verb": int(verb_map[t["verb"]]), "noun": t["noun"]} for t in targets]
    res = evaluate(ToyModel(composition=True), DataLoader(ToyDataset(logits, mapped_targets), batch_size=4),
                   progress=False, class_mapping={"verb": verb_map, "noun": noun_map})
    plain = evaluate(ToyModel(composition=True), DataLoader(ToyDataset(logits, targets), batch_size=4),
                     progress=False)
    # a permutation of the labels with the matching mapping gives exactly the unmapped metrics
    for k in ("verb_top1", "noun_top1", "action_top1", "action_top5"):
        assert res.metrics[k] == plain.metrics[k]
    torch.testing.assert_close(res.probs["verb"][:, verb_map], plain.probs["verb"])
    # the annotation-side file direction (dataset class -> model class) inverts to the prediction direction
    assert invert_class_mapping({2: 0, 0: 1, 1: 2}, 3).tolist() == verb_map.tolist()
    assert invert_class_mapping({5: 0}, 3).tolist() == [5, -1, -1]
    with pytest.raises(ConfigError, match="many-to-one"):
        invert_class_mapping({0: 1, 1: 1}, 3)
    with pytest.raises(ConfigError):
        evaluate(ToyModel(composition=True), DataLoader(ToyDataset(logits, targets), batch_size=4),
                 progress=False, class_mapping=verb_map)  # a composition model needs a table per task
    with pytest.raises(ConfigError):
        evaluate(ToyModel(), DataLoader(ToyDataset(*_toy(n=2)), batch_size=2), progress=False,
                 class_mapping=torch.tensor([0, 1]))  # wrong length


# --------------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_sharded_sampler_covers_every_index_once(world):
    for n in list(range(0, 13)) + [101]:
        shards = [list(ShardedEvalSampler(n, num_replicas=world, rank=r)) for r in range(world)]
        flat = [i for s in shards for i in s]
        assert sorted(flat) == list(range(n)), (n, world)
        assert len(flat) == len(set(flat)) == n
        assert [len(ShardedEvalSampler(n, num_replicas=world, rank=r)) for r in range(world)] == \
            [len(s) for s in shards]
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert list(ShardedEvalSampler(list(range(5)))) == [0, 1, 2, 3, 4]  # no process group: one shard
    with pytest.raises(ConfigError):
        ShardedEvalSampler(5, num_replicas=2, rank=2)


def test_duplicates_from_padding_are_counted_once():
    logits, targets = _toy(n=5, views=1)
    ds = ToyDataset(logits, targets, views=1)
    once = evaluate(ToyModel(), DataLoader(ds, batch_size=5), progress=False)
    twice = evaluate(ToyModel(), DataLoader(ds, batch_size=5, sampler=[0, 1, 2, 3, 4, 0, 1]), progress=False)
    assert twice.counts == once.counts and twice.metrics == once.metrics


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        logits, targets = _toy(n=9, views=2, seed=3, composition=True)
        ds = ToyDataset(logits, targets, excluded=[4])
        sharded = DataLoader(ds, batch_size=2, sampler=ShardedEvalSampler(ds))
        res = evaluate(ToyModel(composition=True), sharded, progress=False)
        padded = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, shuffle=False))  # pads 9 -> 10
        res_pad = evaluate(ToyModel(composition=True), padded, progress=False)
        torch.save({"metrics": res.metrics, "counts": res.counts, "indices": res.indices, "ids": res.ids,
                    "excluded": res.excluded, "verb": res.probs["verb"], "local": len(sharded.sampler),
                    "pad_metrics": res_pad.metrics, "pad_counts": res_pad.counts},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path):
    world = 2
    mp.spawn(_dist_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    logits, targets = _toy(n=9, views=2, seed=3, composition=True)
    single = evaluate(ToyModel(composition=True), DataLoader(ToyDataset(logits, targets, excluded=[4]),
                                                             batch_size=3), progress=False)
    outs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert [o["local"] for o in outs] == [5, 4]  # disjoint shards, no padding
    for o in outs:
        assert o["metrics"] == single.metrics
        assert o["counts"] == single.counts == {"total": 9, "evaluated": 8, "excluded": 1, "unlabelled": 0,
                                                "unreachable": 0, "scored": 8}
        assert o["indices"].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
        assert o["ids"] == single.ids
        assert o["excluded"] == single.excluded == [{"index": 4, "id": "s4", "error": "s4.mp4: broken"}]
        torch.testing.assert_close(o["verb"], single.probs["verb"])
        # DistributedSampler's padding duplicate is dropped: still exact
        assert o["pad_metrics"] == single.metrics and o["pad_counts"] == single.counts


# --------------------------------------------------------------------------------------------- files, report


def _make_video(path, frames=12, fps=10, size=(32, 48)):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[1], size[0], "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(frames):
            img = np.full((size[0], size[1], 3), (16 * i) % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_output_files(tmp_path):
    logits, targets = _toy(n=8, views=2)
    res = evaluate(ToyModel(), DataLoader(ToyDataset(logits, targets, excluded=[2]), batch_size=4),
                   progress=False, class_names=["cut", "stir", "wash", "open", "close"], dataset="toy",
                   model_name="cast")
    files = res.save(tmp_path / "out", probabilities=True)
    assert set(files) == {"results", "per_class", "predictions", "confusion", "probabilities", "summary"}
    data = json.loads(files["results"].read_text())
    assert data["dataset"] == "toy" and data["model"] == "cast" and data["views"] == 2
    assert data["metrics"]["top1"] == pytest.approx(res.metrics["top1"])
    assert data["counts"]["excluded"] == 1 and data["excluded"][0]["id"] == "s2"
    assert data["tasks"] == {"class": C}
    rows = list(csv.DictReader(files["per_class"].open()))
    assert [r["name"] for r in rows] == ["cut", "stir", "wash", "open", "close"]
    assert sum(int(r["support"]) for r in rows) == 7
    assert sum(int(r["correct"]) for r in rows) == round(res.metrics["top1"] * 7)
    preds = list(csv.DictReader(files["predictions"].open()))
    assert len(preds) == 7 and preds[0]["id"] == "s0" and len(preds[0]["top5"].split()) == 5
    assert files["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from safetensors.torch import load_file

    saved = load_file(str(files["probabilities"]))
    torch.testing.assert_close(saved["class_probs"], res.probs["class"])
    assert "top-1" in files["summary"].read_text()
    assert res.confusion().sum() == 7


def test_confusion_plot_with_many_classes(tmp_path):
    g = torch.Generator().manual_seed(1)
    n, c = 200, 60
    probs = torch.rand(n, c, generator=g).softmax(-1)
    targets = torch.randint(c, (n,), generator=g)
    res = EvalResult(metrics={}, tasks=["noun"], indices=torch.arange(n), ids=[str(i) for i in range(n)],
                     probs={"noun": probs}, targets={"noun": targets})
    path = res.plot_confusion(tmp_path / "cm.png", "noun", top_n=12)
    assert path.stat().st_size > 1000
    rows = res.per_class("noun")
    assert len(rows) == c and rows[0]["task"] == "noun"


def test_report_balanced_table(tmp_path):
    ek = {"dataset": "EK100", "model": "CAST",
          "metrics": {"verb_top1": 0.725, "noun_top1": 0.609, "action_top1": 0.493, "verb_top5": 0.9}}
    path = tmp_path / "ssv2" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"model": "CAST", "metrics": {"top1": 0.716, "top5": 0.93}}))
    k400 = {"metrics": {"top1": 0.853}}
    clip = [{"metrics": {"verb_top1": 0.549, "noun_top1": 0.527, "action_top1": 0.338}},
            {"metrics": {"top1": 0.478}}, {"metrics": {"top1": 0.789}}]
    table = report([ek, path, k400] + clip, names=["EK100", "SSV2", "K400"] * 2,
                   models=["CAST"] * 3 + ["CLIP*"] * 3)
    assert table.columns == ["EK100 verb", "EK100 noun", "EK100 action", "SSV2", "K400"]
    assert table.hm_columns == ["EK100 verb", "EK100 noun", "SSV2", "K400"]
    recs = table.records()
    assert recs[0] == ["CAST", "72.5", "60.9", "49.3", "71.6", "85.3", "71.6"]  # CAST Table 2
    assert recs[1] == ["CLIP*", "54.9", "52.7", "33.8", "47.8", "78.9", "56.5"]
    md = table.to_markdown()
    assert md.splitlines()[0] == "| Model | EK100 verb | EK100 noun | EK100 action | SSV2 | K400 | H.M. |"
    text = table.to_csv(tmp_path / "table.csv")
    assert (tmp_path / "table.csv").read_text() == text
    assert text.splitlines()[1] == "CAST,72.50,60.90,49.30,71.60,85.30,71.55"
    assert "harmonic mean" in table.summary()
    # names default to the result's dataset field, then the folder name; a missing column leaves H.M. empty
    partial = report([ek, path])
    assert partial.columns == ["EK100 verb", "EK100 noun", "EK100 action", "ssv2"]
    two = report([{"model": "A", "metrics": {"top1": 0.5}}, {"model": "A", "metrics": {"top1": 0.25}},
                  {"model": "B", "metrics": {"top1": 0.4}}], names=["x", "y", "x"])
    assert two.records()[0][-1] == f"{100 * M.harmonic_mean([0.5, 0.25]):.1f}"
    assert two.records()[1] == ["B", "40.0", "–", "–"]
    with pytest.raises(ConfigError):
        report([{"metrics": {}}])
    with pytest.raises(ConfigError):
        report([tmp_path / "nowhere.json"])
