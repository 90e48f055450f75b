"""Fitting a classifier on stored vectors, and cross-validating the fusions side by side.

The head is fitted full-batch with L-BFGS on the features computed once (no re-embedding, and nothing
but the head is learnt): concat and mean are then plain regularised logistic regression, a convex problem
L-BFGS solves in a few hundred cheap steps — seconds for thousands of items. The loss is scikit-learn's
LogisticRegression's, mean cross-entropy (softmax; per-label sigmoids for multi-label data) plus
‖W‖² / (2·C·N), so ``regularisation`` means what its C means (larger: weaker) and a bigger training set
needs less of it.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch

from .classifier_metrics import classification_report
from .classifiers import FUSIONS, Classifier, FusionNet, Packed, check_fusion
from .views import VIEWS, Views, check_views, select_views, subset, view_index
from .zero_shot import check_labels

STEPS = 300  # L-BFGS iterations: concat at D=512 converges in ~100-200


def check_targets(targets: np.ndarray, labels: Sequence[str], items: int, multi_label: bool | None
                  ) -> tuple[np.ndarray, list[str], bool]:
    """(targets as bool, labels, multi_label): auto-detected when None, from rows holding several labels."""
    labels = check_labels(labels)
    if len(labels) < 2:
        raise ValueError(f"need at least 2 labels to classify, not {len(labels)}")
    targets = np.asarray(targets, bool)
    if targets.shape != (items, len(labels)):
        raise ValueError(f"targets must be (items, labels) = ({items}, {len(labels)}), not {targets.shape}")
    per_item = targets.sum(axis=1)
    if (per_item == 0).any():
        raise ValueError(f"item {int(np.argmax(per_item == 0))} has no label")
    if multi_label is None:
        multi_label = bool((per_item > 1).any())
    elif not multi_label and (per_item > 1).any():
        raise ValueError(f"item {int(np.argmax(per_item > 1))} has several labels: train it as multi-label")
    return targets, labels, multi_label


def _centre(net: FusionNet, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each view's mean over the training items that have it (mean fusion: the pooled vectors' mean)."""
    if net.fusion == "mean":
        pooled, present = net.pooled(vectors, mask)
        return pooled[present].mean(dim=0, keepdim=True) if present.any() else torch.zeros(1, net.dim)
    weight = mask.to(vectors.dtype)
    counts = weight.sum(dim=0).clamp_min(1)[:, None]
    return torch.einsum("bv,bvd->vd", weight, vectors) / counts


def train(views: Views, targets: np.ndarray, labels: Sequence[str], fusion: str = "concat", *,
          use: Sequence[str] = VIEWS, view_weights: Mapping[str, float] | None = None,
          multi_label: bool | None = None, threshold: float = 0.5, regularisation: float = 1.0,
          steps: int = STEPS, seed: int = 0) -> Classifier:
    """Fit a classifier. ``targets`` (N, L) bool, several per item for multi-label data (detected unless
    ``multi_label`` says). ``use``: the views it may read (e.g. ("image",)); it keeps those the items have.
    ``view_weights``: mean fusion's weight per view (default 1). ``seed``: the attention key's start."""
    started = time.perf_counter()
    check_fusion(fusion)
    views = check_views(views)
    targets, labels, multi_label = check_targets(targets, labels, len(views.mask), multi_label)
    if not 0 < threshold < 1 or not regularisation > 0:
        raise ValueError("threshold must lie between 0 and 1, and regularisation be positive")
    view_index(use)
    views = select_views(views, use)
    present = views.mask.any(axis=0)
    used = tuple(name for name, has in zip(VIEWS, present) if has)
    if not used:
        raise ValueError(f"no training item has any of the views {', '.join(use)}")
    weights = [float((view_weights or {}).get(name, 1.0)) for name in VIEWS]
    if any(not np.isfinite(w) or w < 0 for w in weights) or not any(w for w, has in zip(weights, present) if has):
        raise ValueError("view weights must be finite, non-negative, and not all zero")
    net = FusionNet(fusion, views.vectors.shape[2], len(labels), weights)
    generator = torch.Generator().manual_seed(seed)
    vectors, mask = torch.from_numpy(views.vectors), torch.from_numpy(views.mask)
    with torch.no_grad():
        net.centre.copy_(_centre(net, vectors, mask))
        packed = net.inputs(vectors, mask)
        if fusion == "attention":
            net.key.copy_(0.01 * torch.randn(net.dim, generator=generator))
    loss_value, iterations = _fit(net, packed, torch.from_numpy(targets), multi_label,
                                  1.0 / (2 * regularisation * len(targets)), steps)
    counts = targets.sum(axis=0)
    figures = {"items": int(len(targets)), "per_label": {label: int(c) for label, c in zip(labels, counts)},
               "views": {name: int(n) for name, n in zip(VIEWS, views.mask.sum(axis=0)) if n},
               "loss": loss_value, "iterations": iterations, "regularisation": float(regularisation),
               "seed": int(seed), "seconds": round(time.perf_counter() - started, 3)}
    return Classifier(net, labels, used, multi_label, float(threshold), figures)


def _fit(net: FusionNet, packed: Packed, targets: torch.Tensor, multi_label: bool,
         penalty: float, steps: int) -> tuple[float, int]:
    """Full-batch L-BFGS with a strong-Wolfe line search (no learning rate to tune); (final loss, steps)."""
    net.train()
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.LBFGS(parameters, lr=1.0, max_iter=steps, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")
    index = targets.float().argmax(dim=1)
    truth = targets.float()

    def objective() -> torch.Tensor:
        logits = net.head(packed)
        if multi_label:
            data = torch.nn.functional.binary_cross_entropy_with_logits(logits, truth, reduction="sum") / len(truth)
        else:
            data = torch.nn.functional.cross_entropy(logits, index)
        return data + penalty * net.penalty()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimiser.step(closure)
    net.eval()
    state = optimiser.state[parameters[0]]
    with torch.no_grad():
        final = float(objective())
    return round(final, 6), int(state.get("n_iter", 0))


def fold_ids(targets: np.ndarray, labels: Sequence[str], folds: int, seed: int) -> tuple[np.ndarray, int]:
    """(fold of each item, number of folds): stratified by label (multi-label: by each item's rarest label),
    no more folds than the rarest label has items, at least 2."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, not {folds}")
    counts = targets.sum(axis=0)
    rare = int(np.argmin(counts))
    if counts[rare] < 2:
        raise ValueError(f"label {labels[rare]!r} has {int(counts[rare])} item(s): cross-validation needs at "
                         f"least 2 of each label")
    folds = int(min(folds, counts[rare]))
    rank = np.where(targets, counts[None, :], np.iinfo(np.int64).max)
    stratum = rank.argmin(axis=1)  # single-label: the label itself
    rng = np.random.default_rng(seed)
    ids = np.empty(len(targets), np.int64)
    offset = 0
    for label in range(targets.shape[1]):
        members = rng.permutation(np.flatnonzero(stratum == label))
        ids[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)  # the next label starts where this one stopped: folds stay the same size
    return ids, folds


def cross_validate(views: Views, targets: np.ndarray, labels: Sequence[str], fusion: str = "concat",
                   folds: int = 5, seed: int = 0, **options) -> dict:
    """Held-out accuracy and macro F1 (means over the folds), per fold, the fold count, and the chance
    level (1/L) and majority share to read them against. ``options`` go to ``train``."""
    started = time.perf_counter()
    views = check_views(views)
    targets, labels, multi_label = check_targets(targets, labels, len(views.mask), options.pop("multi_label", None))
    ids, folds = fold_ids(targets, labels, folds, seed)
    per_fold = []
    for fold in range(folds):
        held = ids == fold
        model = train(subset(views, ~held), targets[~held], labels, fusion, multi_label=multi_label, seed=seed,
                      **options)
        test = subset(views, held)
        # every held-out item gets a prediction (its bias alone if it has no view the model reads)
        report = classification_report(targets[held], model.decide(model.predict_proba(test)), labels,
                                       multi_label=multi_label)
        per_fold.append({"items": int(held.sum()), "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]})
    return {"fusion": fusion, "folds": folds, "items": int(len(targets)), "multi_label": multi_label,
            "accuracy": float(np.mean([f["accuracy"] for f in per_fold])),
            "macro_f1": float(np.mean([f["macro_f1"] for f in per_fold])),
            "chance": 1.0 / len(labels), "majority": float(targets.sum(axis=0).max() / len(targets)),
            "per_fold": per_fold, "seconds": round(time.perf_counter() - started, 3)}


def compare_fusions(views: Views, targets: np.ndarray, labels: Sequence[str], fusions: Sequence[str] = FUSIONS,
                    folds: int = 5, seed: int = 0, **options) -> dict[str, dict]:
    """``cross_validate`` for each fusion on the same folds: fusion → its result, in the order given."""
    return {fusion: cross_validate(views, targets, labels, check_fusion(fusion), folds, seed, **options)
            for fusion in fusions}


def best_fusion(results: Mapping[str, dict]) -> str:
    """The fusion with the best macro F1, then accuracy; ties keep the earlier (simpler) one."""
    return max(results, key=lambda f: (round(results[f]["macro_f1"], 6), round(results[f]["accuracy"], 6),
                                       -list(results).index(f)))
