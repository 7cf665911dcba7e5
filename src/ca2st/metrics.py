"""Classification metrics: pure functions on tensors, no I/O.

Conventions:

* ``scores`` are ``(N, C)`` probabilities or logits (only their order matters), ``targets`` ``(N,)`` class ids.
* Accuracies are fractions in ``[0, 1]``; summaries and tables show them as percentages.
* Ties are broken by :func:`torch.topk` / :func:`torch.argmax`, as in the official code; with averaged
  softmax scores exact ties are rare.

EPIC-KITCHENS-100 (:func:`epic_accuracy`), the official definition of the CAST evaluation code:

* verb and noun top-k are computed independently, each from its own head;
* **action top-1** is right iff the verb argmax **and** the noun argmax are both right (the official code
  compares ``verb·1000 + noun``; the argmaxes are independent, no verb–noun prior or joint scoring);
* **action top-5** is right iff the true verb is among the top-5 verbs **and** the true noun is among the
  top-5 nouns. This is the official ``merge`` definition (a conjunction of per-task top-5s), not a top-5 over
  the 97 × 300 verb–noun pairs; it is never lower than the pair top-5 would be.

The papers' balanced tables summarise several datasets by the harmonic mean :func:`harmonic_mean`
``n / Σ 1/a_i`` (CAST Table 2: "H.M. All" over EK100 verb, EK100 noun, SSV2 and K400; action is not in it).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

__all__ = [
    "topk_correct",
    "topk_accuracy",
    "accuracy",
    "per_class_accuracy",
    "mean_class_accuracy",
    "confusion_matrix",
    "epic_accuracy",
    "harmonic_mean",
    "classification_metrics",
    "informative_ks",
]


def _check(scores: torch.Tensor, targets: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"targets must be (N,) with N = {scores.shape[0]}, got shape {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(
            f"targets must lie in [0, {scores.shape[1]}), got values in [{int(targets.min())}, {int(targets.max())}]"
        )


def topk_correct(scores: torch.Tensor, targets: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Boolean ``(N,)``: whether each target is among the ``k`` highest scores (``k`` is capped at ``C``)."""
    _check(scores, targets)
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        return torch.zeros(scores.shape[0], dtype=torch.bool)
    k = max(1, min(int(k), scores.shape[1]))
    top = scores.topk(k, dim=1).indices
    return (top == targets.view(-1, 1)).any(dim=1)


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """``{k: fraction of samples whose target is in the top k}``; an empty set gives NaN."""
    out = {}
    for k in ks:
        hit = topk_correct(scores, targets, k)
        out[int(k)] = hit.float().mean().item() if hit.numel() else float("nan")
    return out


def accuracy(scores: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Top-``k`` accuracy as a fraction."""
    return topk_accuracy(scores, targets, (k,))[k]


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class.

    ``preds`` are class ids ``(N,)``; pass ``scores.argmax(1)`` for scores.
    """
    preds = preds.reshape(-1).long()
    targets = targets.reshape(-1).long()
    if preds.shape != targets.shape:
        raise ValueError(f"preds and targets differ in length: {preds.shape[0]} vs {targets.shape[0]}")
    for name, t in (("preds", preds), ("targets", targets)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes})")
    flat = targets * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(
    scores: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None, k: int = 1
) -> dict[str, torch.Tensor]:
    """Per-class table over ``C`` classes (``num_classes`` defaults to ``scores.shape[1]``).

    Returns tensors of length ``C``: ``support`` (samples of that true class), ``correct`` (of those, how many
    had the class in their top ``k``), ``accuracy`` (= recall, ``correct / support``; NaN where
    ``support == 0``), ``predicted`` (samples whose top-1 is that class) and ``precision`` (top-1 precision,
    NaN where ``predicted == 0``).
    """
    _check(scores, targets)
    c = scores.shape[1] if num_classes is None else int(num_classes)
    hit = topk_correct(scores, targets, k)
    support = torch.bincount(targets, minlength=c)
    correct = torch.bincount(targets[hit], minlength=c)
    preds = scores.argmax(1) if scores.numel() else torch.zeros(scores.shape[0], dtype=torch.long)
    predicted = torch.bincount(preds, minlength=c)
    true_pos = torch.bincount(preds[preds == targets], minlength=c)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    acc = torch.where(support > 0, correct.double() / support.clamp_min(1), nan)
    prec = torch.where(predicted > 0, true_pos.double() / predicted.clamp_min(1), nan)
    return {"support": support, "correct": correct, "accuracy": acc, "predicted": predicted, "precision": prec}


def mean_class_accuracy(scores: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Mean over the classes **present in the ground truth** of their top-``k`` accuracy (mean recall)."""
    table = per_class_accuracy(scores, targets, k=k)
    present = table["support"] > 0
    if not present.any():
        return float("nan")
    return table["accuracy"][present].mean().item()


def epic_accuracy(
    verb_scores: torch.Tensor,
    noun_scores: torch.Tensor,
    verb_targets: torch.Tensor,
    noun_targets: torch.Tensor,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """EPIC-KITCHENS-100 verb, noun and action top-k (the official definition, see the module docstring).

    Returns ``{'verb_top1', 'noun_top1', 'action_top1', 'verb_top5', ...}`` for every ``k`` in ``ks``:
    action top-k is right iff the verb is in the top-k verbs and the noun in the top-k nouns. A verb or noun top-k
    with ``k`` not below that task's class count is left out (always right), and so is an action top-k when it is
    left out for both.
    """
    if verb_scores.shape[0] != noun_scores.shape[0]:
        raise ValueError(f"verb and noun scores differ in length: {verb_scores.shape[0]} vs {noun_scores.shape[0]}")
    verb_ks, noun_ks = informative_ks(ks, verb_scores.shape[-1]), informative_ks(ks, noun_scores.shape[-1])
    out = {}
    for k in ks:
        v = topk_correct(verb_scores, verb_targets, k)
        n = topk_correct(noun_scores, noun_targets, k)
        mean = lambda t: t.float().mean().item() if t.numel() else float("nan")  # noqa: E731
        if k in verb_ks:
            out[f"verb_top{k}"] = mean(v)
        if k in noun_ks:
            out[f"noun_top{k}"] = mean(n)
        if k in verb_ks or k in noun_ks:
            out[f"action_top{k}"] = mean(v & n)
    return out


def harmonic_mean(values: Iterable[float]) -> float:
    """``n / Σ 1/a_i`` (the papers' H.M.); 0 if any value is 0; NaN for no values or a NaN value."""
    vals = [float(v) for v in values]
    if not vals or any(v != v for v in vals):
        return float("nan")
    if any(v < 0 for v in vals):
        raise ValueError(f"the harmonic mean needs non-negative values, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def informative_ks(ks: Sequence[int], num_classes: int) -> list[int]:
    """The ``ks`` worth reporting for ``num_classes`` classes: 1, and every ``k`` below the class count (a top-k
    with ``k >= C`` is always right)."""
    return [k for k in ks if k == 1 or k < num_classes]


def classification_metrics(
    scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5), prefix: str = ""
) -> dict[str, float]:
    """``{prefix + 'top1', prefix + 'top5', prefix + 'mean_class_acc'}`` of one single-label task; a top-k with
    ``k`` not below the class count is left out (see :func:`informative_ks`)."""
    ks = informative_ks(ks, scores.shape[-1])
    out = {f"{prefix}top{k}": v for k, v in topk_accuracy(scores, targets, ks).items()}
    out[f"{prefix}mean_class_acc"] = mean_class_accuracy(scores, targets) if targets.numel() else float("nan")
    return out
