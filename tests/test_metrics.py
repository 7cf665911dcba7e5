"""Every metric against hand-computed cases."""

import math

import pytest
import torch

from ca2st import metrics as M

# 4 samples, 4 classes. Rankings (best first):
#   s0: 2 > 1 > 0 > 3   target 2 -> top-1 hit
#   s1: 0 > 3 > 1 > 2   target 3 -> top-2 hit
#   s2: 1 > 2 > 3 > 0   target 0 -> top-4 hit only
#   s3: 3 > 0 > 2 > 1   target 3 -> top-1 hit
SCORES = torch.tensor(
    [
        [0.2, 0.3, 0.4, 0.1],
        [0.5, 0.15, 0.05, 0.3],
        [0.1, 0.4, 0.3, 0.2],
        [0.3, 0.05, 0.15, 0.5],
    ]
)
TARGETS = torch.tensor([2, 3, 0, 3])


def test_topk_accuracy():
    assert M.topk_correct(SCORES, TARGETS, 1).tolist() == [True, False, False, True]
    assert M.topk_correct(SCORES, TARGETS, 2).tolist() == [True, True, False, True]
    acc = M.topk_accuracy(SCORES, TARGETS, (1, 2, 3, 4))
    assert acc == {1: 0.5, 2: 0.75, 3: 0.75, 4: 1.0}
    # k larger than the class count is capped: top-5 of 4 classes is always right
    assert M.accuracy(SCORES, TARGETS, 5) == 1.0
    assert M.accuracy(SCORES, TARGETS) == 0.5


def test_topk_empty_and_bad_input():
    assert math.isnan(M.accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ValueError):
        M.accuracy(SCORES, torch.tensor([0, 1, 2, 4]))  # target out of range
    with pytest.raises(ValueError):
        M.accuracy(SCORES, TARGETS[:3])


def test_confusion_matrix():
    cm = M.confusion_matrix(SCORES.argmax(1), TARGETS, 4)
    # preds: 2, 0, 1, 3 ; targets: 2, 3, 0, 3
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[2, 2] = 1
    expected[3, 0] = 1
    expected[0, 1] = 1
    expected[3, 3] = 1
    assert torch.equal(cm, expected)
    assert cm.sum() == 4 and cm.diag().sum() == 2


def test_per_class_and_mean_class_accuracy():
    table = M.per_class_accuracy(SCORES, TARGETS)
    assert table["support"].tolist() == [1, 0, 1, 2]
    assert table["correct"].tolist() == [0, 0, 1, 1]
    acc = table["accuracy"]
    assert acc[0] == 0 and math.isnan(acc[1]) and acc[2] == 1 and acc[3] == 0.5
    assert table["predicted"].tolist() == [1, 1, 1, 1]
    # precision: class 2 predicted once and right, class 3 predicted once and right, 0 and 1 wrong
    assert table["precision"].tolist() == [0.0, 0.0, 1.0, 1.0]
    # mean over the classes present in the ground truth (0, 2, 3): (0 + 1 + 0.5) / 3
    assert M.mean_class_accuracy(SCORES, TARGETS) == pytest.approx(0.5)
    # differs from plain accuracy when classes are imbalanced
    scores = torch.eye(3)[[0, 0, 0, 1]]
    targets = torch.tensor([0, 0, 0, 2])
    assert M.accuracy(scores, targets) == 0.75
    assert M.mean_class_accuracy(scores, targets) == pytest.approx((1 + 0) / 2)
    # top-2 per class: class 0 ok (s2 ranks 0 last -> miss), class 3: s1 hit, s3 hit
    assert M.per_class_accuracy(SCORES, TARGETS, k=2)["correct"].tolist() == [0, 0, 1, 2]


def test_epic_action_accuracy():
    # 3 verbs, 3 nouns, 4 samples
    verb = torch.tensor(
        [
            [0.7, 0.2, 0.1],  # argmax 0
            [0.1, 0.8, 0.1],  # argmax 1
            [0.35, 0.25, 0.4],  # argmax 2, then 0
            [0.5, 0.4, 0.1],  # argmax 0
        ]
    )
    noun = torch.tensor(
        [
            [0.1, 0.1, 0.8],  # argmax 2
            [0.6, 0.3, 0.1],  # argmax 0
            [0.2, 0.5, 0.3],  # argmax 1
            [0.3, 0.6, 0.1],  # argmax 1
        ]
    )
    verb_t = torch.tensor([0, 1, 0, 1])
    noun_t = torch.tensor([2, 1, 1, 1])
    out = M.epic_accuracy(verb, noun, verb_t, noun_t, ks=(1, 2))
    # verb top-1: s0 yes, s1 yes, s2 no, s3 no -> 0.5 ; noun top-1: s0 yes, s1 no, s2 yes, s3 yes -> 0.75
    assert out["verb_top1"] == 0.5 and out["noun_top1"] == 0.75
    # action top-1 needs both argmaxes right: only s0 -> 0.25 (not verb_top1 * noun_top1)
    assert out["action_top1"] == 0.25
    # top-2: every verb target is in its top-2 ({0,1}, {1,0|2}, {2,0}, {0,1}); every noun target too
    assert out["verb_top2"] == 1.0 and out["noun_top2"] == 1.0
    # action top-k = verb in top-k verbs AND noun in top-k nouns (the official conjunction)
    assert out["action_top2"] == 1.0
    # a sample with the verb in top-2 but the noun outside it is an action miss
    noun_t2 = torch.tensor([2, 2, 1, 1])  # s1: noun 2 is last of [0.6, 0.3, 0.1]
    out2 = M.epic_accuracy(verb, noun, verb_t, noun_t2, ks=(2,))
    assert out2["verb_top2"] == 1.0 and out2["noun_top2"] == 0.75 and out2["action_top2"] == 0.75
    assert set(out) == {f"{t}_top{k}" for t in ("verb", "noun", "action") for k in (1, 2)}


def test_epic_action_top5_is_the_conjunction_not_pair_top5():
    # 6 verbs, 6 nouns; the true pair is the 5th verb and the 5th noun: conjunction says "hit", while the true
    # pair ranks far below 5th among the 36 pairs by p(verb)p(noun).
    ranks = torch.tensor([0.30, 0.25, 0.2, 0.15, 0.07, 0.03])
    verb = ranks[None].clone()
    noun = ranks[None].clone()
    out = M.epic_accuracy(verb, noun, torch.tensor([4]), torch.tensor([4]))
    assert out["action_top5"] == 1.0 and out["action_top1"] == 0.0
    pair_rank = int((torch.outer(ranks, ranks).flatten() > ranks[4] ** 2).sum())
    assert pair_rank >= 5


def test_harmonic_mean():
    # CAST Table 2: H.M.(SSV2 71.6, K400 85.3) = 77.9 and H.M. All (72.5, 60.9, 71.6, 85.3) = 71.6
    assert M.harmonic_mean([71.6, 85.3]) == pytest.approx(77.85, abs=0.01)
    assert round(M.harmonic_mean([72.5, 60.9, 71.6, 85.3]), 1) == 71.6
    assert round(M.harmonic_mean([54.9, 52.7, 47.8, 78.9]), 1) == 56.5  # CLIP* row
    assert M.harmonic_mean([0.5, 0.25]) == pytest.approx(2 / (2 + 4))
    assert M.harmonic_mean([0.4]) == pytest.approx(0.4)
    assert M.harmonic_mean([0.0, 0.9]) == 0.0
    assert math.isnan(M.harmonic_mean([]))
    assert math.isnan(M.harmonic_mean([0.5, float("nan")]))
    with pytest.raises(ValueError):
        M.harmonic_mean([-0.1, 0.5])


def test_classification_metrics_prefix_and_only_informative_top_k():
    out = M.classification_metrics(SCORES, TARGETS, ks=(1, 2, 5), prefix="verb_")
    # top-5 of 4 classes is always right: left out
    assert out == {"verb_top1": 0.5, "verb_top2": 0.75, "verb_mean_class_acc": pytest.approx(0.5)}
    assert set(M.classification_metrics(torch.eye(6), torch.arange(6))) == {"top1", "top5", "mean_class_acc"}
    assert M.informative_ks((1, 5), 5) == [1] and M.informative_ks((1, 5), 1) == [1]


def test_epic_top_k_not_below_a_class_count_is_left_out():
    verb, noun = torch.eye(3), torch.eye(8)[:3]  # 3 verbs, 8 nouns
    out = M.epic_accuracy(verb, noun, torch.arange(3), torch.arange(3))
    assert set(out) == {"verb_top1", "noun_top1", "action_top1", "noun_top5", "action_top5"}
    assert set(M.epic_accuracy(verb, verb, torch.arange(3), torch.arange(3))) == {
        "verb_top1",
        "noun_top1",
        "action_top1",
    }
