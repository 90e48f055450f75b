"""Classification metrics over (N, L) boolean label matrices: what cross-validation and ``evaluate --labels``
report. Numpy only, so ``evaluate`` reads them without torch.

Conventions (scikit-learn's, so figures compare with what people know): precision of a label never
predicted and recall of a label never true are 0; macro F1 averages the labels that occur in the truth or
the predictions (a label absent from both says nothing about the classifier); single-label accuracy is
top-1 correctness, multi-label accuracy the share of items whose whole label set is exactly right.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def label_matrix(per_item: Sequence[Iterable[str]], labels: Sequence[str] | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """(N, L) bool targets and the label order from each item's label names (a CSV's rows grouped by path).
    Without ``labels`` the order is sorted; with it, an item naming another label is refused."""
    per_item = [list(names) for names in per_item]
    if labels is None:
        labels = sorted({name for names in per_item for name in names})
    labels = list(labels)
    column = {label: i for i, label in enumerate(labels)}
    if len(column) != len(labels):
        raise ValueError("labels must be unique")
    matrix = np.zeros((len(per_item), len(labels)), bool)
    for row, names in enumerate(per_item):
        for name in names:
            if name not in column:
                raise ValueError(f"item {row}: label {str(name)[:80]!r} is not one of the classifier's labels")
            matrix[row, column[name]] = True
    return matrix, labels


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros(top.shape, np.float64), where=bottom > 0)


def is_single_label(*matrices: np.ndarray) -> bool:
    return all(bool(np.all(m.sum(axis=1) == 1)) for m in matrices)


def classification_report(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str],
                          multi_label: bool | None = None) -> dict:
    """accuracy, micro_f1, macro_f1, per_class {label: precision, recall, f1, support, (multi-label:
    confusion [[tn, fp], [fn, tp]])}, confusion (single-label: L×L counts, rows truth, columns predicted;
    multi-label: None), items, multi_label. Single-label unless told, or unless some row of either matrix
    holds other than exactly one label."""
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    labels = list(labels)
    if truth.shape != predicted.shape or truth.ndim != 2 or truth.shape[1] != len(labels):
        raise ValueError(f"truth {truth.shape} and predictions {predicted.shape} must share one shape "
                         f"(N, {len(labels)})")
    if multi_label is None:
        multi_label = not is_single_label(truth, predicted)
    elif not multi_label and not is_single_label(truth, predicted):
        raise ValueError("single-label metrics need exactly one true and one predicted label per item")
    tp = (truth & predicted).sum(axis=0).astype(np.float64)
    fp = (~truth & predicted).sum(axis=0).astype(np.float64)
    fn = (truth & ~predicted).sum(axis=0).astype(np.float64)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    occurring = (tp + fp + fn) > 0
    per_class = {}
    for i, label in enumerate(labels):
        per_class[label] = {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                            "support": int(tp[i] + fn[i])}
        if multi_label:
            tn = len(truth) - tp[i] - fp[i] - fn[i]
            per_class[label]["confusion"] = [[int(tn), int(fp[i])], [int(fn[i]), int(tp[i])]]
    micro = float(_ratio(np.array(2 * tp.sum()), np.array(2 * tp.sum() + fp.sum() + fn.sum())))
    if multi_label:
        accuracy = float(np.mean(np.all(truth == predicted, axis=1))) if len(truth) else 0.0
        confusion = None
    else:
        true_index, predicted_index = truth.argmax(axis=1), predicted.argmax(axis=1)
        accuracy = float(np.mean(true_index == predicted_index)) if len(truth) else 0.0
        counts = np.zeros((len(labels), len(labels)), np.int64)
        np.add.at(counts, (true_index, predicted_index), 1)
        confusion = counts.tolist()
    return {"items": int(len(truth)), "multi_label": bool(multi_label), "accuracy": accuracy, "micro_f1": micro,
            "macro_f1": float(f1[occurring].mean()) if occurring.any() else 0.0,
            "per_class": per_class, "confusion": confusion}
