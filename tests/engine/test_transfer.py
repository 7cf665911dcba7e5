"""Transfer through a class mapping: probabilities summed per dataset class, unreachable samples, inversion."""

import pytest
import torch
from eval_toys import ToyDataset, ToyModel, toy
from torch.utils.data import DataLoader

from ca2st.data.datasets import collate
from ca2st.engine.evaluate import evaluate
from ca2st.engine.transfer import invert_class_mapping, map_predictions, mapping_tables
from ca2st.errors import ConfigError


def test_map_predictions_sums_mapped_classes():
    probs = {"class": torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])}
    targets = {"class": torch.tensor([2, -1])}
    # model classes 0, 1 -> dataset 0; 2 unmapped; 3 -> dataset 1; dataset class 2 has no model class
    mapped = map_predictions(probs, targets, [0, 0, -1, 1], dataset_classes={"class": 3})
    torch.testing.assert_close(mapped.probs["class"], torch.tensor([[0.3, 0.4, 0.0], [0.8, 0.1, 0.0]]))
    assert mapped.unreachable.tolist() == [True, False]  # the unlabelled sample is never unreachable
    assert mapped.unmapped_model_classes == {"class": [2]} and mapped.unmapped_dataset_classes == {"class": [2]}
    record = mapped.record(torch.tensor([10, 11]), ["a", "b"])
    assert record["unreachable"] == [{"index": 10, "id": "a"}]
    # tables in every accepted form
    assert mapping_tables({0: 1}, {"class": 3})["class"].tolist() == [1, -1, -1]
    assert mapping_tables({"verb": [1, 0]}, {"verb": 2, "noun": 3}).keys() == {"verb"}
    with pytest.raises(ConfigError, match="task"):
        mapping_tables({"action": [0]}, {"verb": 2, "noun": 3})
    with pytest.raises(ConfigError, match=">= 0"):
        mapping_tables([0, -2], {"class": 2})
    with pytest.raises(ConfigError, match="outside"):
        mapping_tables({5: 0}, {"class": 2})


def test_transfer_mapping_merges_probabilities_and_reports_unreachable():
    # model classes 0..4 -> dataset classes: 0->1, 1->1, 2->0, 3->-1 (unmapped), 4->2 ; dataset has 4 classes
    # (class 3 has no model class: samples labelled 3 are unreachable)
    table = torch.tensor([1, 1, 0, -1, 2])
    logits = [
        torch.tensor([[2.0, 1.5, 0, 3.0, 0]]),
        torch.tensor([[0, 0, 2.0, 0, 0]]),
        torch.tensor([[0, 0, 0, 0, 1.0]]),
        torch.tensor([[1.0, 0, 0, 0, 0]]),
    ]
    targets = [1, 0, 0, 3]
    res = evaluate(
        ToyModel(),
        DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate),
        progress=False,
        class_mapping=table,
        class_names=["zero", "one", "two", "three"],
    )
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
    res2 = evaluate(
        ToyModel(),
        DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate),
        progress=False,
        class_mapping={"class": {0: 1, 1: 1, 2: 0, 4: 2}},
        class_names=["a", "b", "c", "d"],
    )
    torch.testing.assert_close(res2.probs["class"], merged)
    assert res2.metrics == res.metrics


def test_transfer_mapping_composition_and_inversion():
    logits, targets = toy(n=6, views=2, composition=True)
    verb_map = torch.tensor([2, 0, 1])  # a permutation of 3 verbs
    noun_map = {0: 0, 1: 1, 2: 2, 3: 3}  # identity
    mapped_targets = [{"verb": int(verb_map[t["verb"]]), "noun": t["noun"]} for t in targets]
    res = evaluate(
        ToyModel(composition=True),
        DataLoader(ToyDataset(logits, mapped_targets), batch_size=4, collate_fn=collate),
        progress=False,
        class_mapping={"verb": verb_map, "noun": noun_map},
    )
    plain = evaluate(
        ToyModel(composition=True),
        DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate),
        progress=False,
    )
    # a permutation of the labels with the matching mapping gives exactly the unmapped metrics
    for k in ("verb_top1", "noun_top1", "action_top1"):  # no top-5 of 3 verbs and 4 nouns
        assert res.metrics[k] == plain.metrics[k]
    torch.testing.assert_close(res.probs["verb"][:, verb_map], plain.probs["verb"])
    # the annotation-side file direction (dataset class -> model class) inverts to the prediction direction
    assert invert_class_mapping({2: 0, 0: 1, 1: 2}, 3).tolist() == verb_map.tolist()
    assert invert_class_mapping({5: 0}, 3).tolist() == [5, -1, -1]
    with pytest.raises(ConfigError, match="many-to-one"):
        invert_class_mapping({0: 1, 1: 1}, 3)
    with pytest.raises(ConfigError):
        evaluate(
            ToyModel(composition=True),
            DataLoader(ToyDataset(logits, targets), batch_size=4, collate_fn=collate),
            progress=False,
            class_mapping=verb_map,
        )  # a composition model needs a table per task
    with pytest.raises(ConfigError):
        evaluate(
            ToyModel(),
            DataLoader(ToyDataset(*toy(n=2)), batch_size=2, collate_fn=collate),
            progress=False,
            class_mapping=torch.tensor([0, 1]),
        )  # wrong length
