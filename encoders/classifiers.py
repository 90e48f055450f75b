"""Trained classifiers over an item's stored vectors, with the fusion of its views selectable.

- concat (sequence fusion): the views side by side, a zero block where one is missing, plus the mask
  (so each pattern of present views gets its own offset) → a linear head. Each view keeps its own weights.
- mean (parallel fusion): the weighted mean of the present views in the shared space, renormalised → a
  linear head; one set of weights reads every modality, so a label learnt from pictures also reads captions.
- attention (spatial fusion): per view a score from its vector and a learned view-type bias, a softmax over
  the views the item has, and the item's logits the so-weighted sum of per-view heads' logits (attention
  pooling with each view projected into label space as its value): the item decides which view to trust.

Linear heads because the vectors already carry the semantics and labelled sets are small (a linear probe
is the standard CLIP classifier). Inputs are centred per view on the training items (the modality gap and
the space's common direction are not evidence) and scaled by √D so that coordinates are about unit size and
one regularisation strength fits any D. Training lives in classifier_training.py, files in
classifier_files.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from .views import VIEWS, Views, check_views

FUSIONS = ("concat", "mean", "attention")
BATCH = 16384  # items per predict step: 128 MiB of float32 views at D=512, and enough to keep matmuls busy
_MASKED = -1e30  # a score no present view reaches: exp() is exactly 0, and no NaN when nothing is present


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {str(fusion)[:40]!r}: use {', '.join(FUSIONS)}")
    return fusion


class Packed(NamedTuple):
    """Training features computed once. concat/attention: one row per (item, view) the item has, grouped by
    view (``counts`` rows each); mean: one row per item (``items`` and ``views`` then unused)."""

    features: torch.Tensor
    items: torch.Tensor
    views: torch.Tensor
    counts: list[int]
    mask: torch.Tensor


class FusionNet(nn.Module):
    """Views (B, V, D) and mask (B, V) → logits (B, L). ``inputs`` is fixed once ``centre`` is: training
    computes it once and fits only ``head``; ``forward`` (prediction) gives the same logits from the views."""

    def __init__(self, fusion: str, dim: int, labels: int, view_weights: Sequence[float] | None = None):
        super().__init__()
        self.fusion, self.dim, self.scale = check_fusion(fusion), int(dim), float(dim) ** 0.5
        views = len(VIEWS)
        weights = torch.ones(views) if view_weights is None else torch.tensor(list(view_weights), dtype=torch.float32)
        self.register_buffer("view_weights", weights, persistent=False)  # in the JSON, not a tensor
        self.register_buffer("centre", torch.zeros(1 if fusion == "mean" else views, dim))
        if fusion == "attention":
            self.key = nn.Parameter(torch.zeros(dim))
            self.view_bias = nn.Parameter(torch.zeros(views))
            self.weight = nn.Parameter(torch.zeros(views, dim, labels))
        else:
            width = dim if fusion == "mean" else views * dim + views
            self.weight = nn.Parameter(torch.zeros(width, labels))
        self.bias = nn.Parameter(torch.zeros(labels))

    def pooled(self, vectors: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean fusion's vector (B, D), unit length, and whether the item had any weighted view (B,)."""
        summed = torch.einsum("bv,bvd->bd", self.view_weights * mask.to(vectors.dtype), vectors)
        norm = summed.norm(dim=1, keepdim=True)
        return summed / norm.clamp_min(1e-12), norm[:, 0] > 1e-12

    def inputs(self, vectors: torch.Tensor, mask: torch.Tensor) -> Packed:
        """What the head reads in training: centred, scaled features, for concat and attention only of the
        views items have, as (item, view) pairs grouped by view (items have ~1.5 of the 4 views: the head
        then computes no zero blocks)."""
        if self.fusion == "mean":
            pooled, present = self.pooled(vectors, mask)
            features = (pooled - self.centre[0]) * (self.scale * present.to(pooled.dtype))[:, None]
            return Packed(features, present, present, [], mask)
        view, item = torch.nonzero(mask.T, as_tuple=True)  # sorted by view, then item
        features = (vectors[item, view] - self.centre[view]) * self.scale
        return Packed(features, item, view, mask.sum(dim=0).tolist(), mask)

    def head(self, packed: Packed) -> torch.Tensor:
        if self.fusion == "mean":
            return packed.features @ self.weight + self.bias
        items, mask = packed.items, packed.mask
        if self.fusion == "concat":
            blocks = self.weight[:-len(VIEWS)].view(len(VIEWS), self.dim, -1)
            per_pair = torch.cat([chunk @ blocks[v] for v, chunk in enumerate(packed.features.split(packed.counts))])
            summed = torch.zeros(len(mask), per_pair.shape[1]).index_add(0, items, per_pair)
            return summed + mask.to(summed.dtype) @ self.weight[-len(VIEWS):] + self.bias
        both = torch.cat([self.weight, self.key[None, :, None].expand(len(VIEWS), -1, 1)], dim=2)  # values | key
        per_pair = torch.cat([chunk @ both[v] for v, chunk in enumerate(packed.features.split(packed.counts))])
        scores = torch.full(mask.shape, _MASKED).index_put((items, packed.views),
                                                             per_pair[:, -1] + self.view_bias[packed.views])
        attention = torch.softmax(scores, dim=1)[items, packed.views]  # over the views the item has
        weighted = attention[:, None] * per_pair[:, :-1]
        return torch.zeros(len(mask), weighted.shape[1]).index_add(0, items, weighted) + self.bias

    def _attend(self, scores: torch.Tensor, mask: torch.Tensor, per_view: torch.Tensor) -> torch.Tensor:
        """The attention-weighted sum of per-view logits (B, V, L): a softmax over the views the item has."""
        attention = torch.softmax(scores.masked_fill(~mask, _MASKED), dim=1)  # missing views get exactly 0
        return torch.einsum("bv,bvl->bl", attention, per_view) + self.bias

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same logits as ``head(inputs(...))``, reading the (B, V, D) input once: one strided matmul
        per view (BLAS reads a view's rows in place) with the centring folded into a per-view constant."""
        if self.fusion == "mean":
            pooled, present = self.pooled(vectors, mask)
            shift = self.centre[0] @ self.weight  # (L,)
            return self.scale * (pooled @ self.weight - shift) * present[:, None] + self.bias
        weight = mask.to(vectors.dtype) * self.scale  # (B, V)
        if self.fusion == "concat":
            blocks = self.weight[:-len(VIEWS)].view(len(VIEWS), self.dim, -1)  # (V, D, L) and the mask's rows
            per_view = torch.stack([vectors[:, v] @ blocks[v] for v in range(len(VIEWS))], dim=1)
            shift = torch.einsum("vd,vdl->vl", self.centre, blocks)
            return torch.einsum("bv,bvl->bl", weight, per_view - shift) + \
                mask.to(vectors.dtype) @ self.weight[-len(VIEWS):] + self.bias
        both = torch.cat([self.weight, self.key[None, :, None].expand(len(VIEWS), -1, 1)], dim=2)  # values | key
        per_view = torch.stack([vectors[:, v] @ both[v] for v in range(len(VIEWS))], dim=1)
        per_view = (per_view - torch.einsum("vd,vdl->vl", self.centre, both)) * weight[..., None]
        return self._attend(per_view[..., -1] + self.view_bias, mask, per_view[..., :-1])

    def penalty(self) -> torch.Tensor:
        """The squared norm the regularisation charges: every weight, no bias (offsets are free)."""
        total = (self.weight ** 2).sum()
        return total + (self.key ** 2).sum() if self.fusion == "attention" else total


@dataclass
class Classifier:
    """A trained head and what it needs to read items: its labels, the views it uses, and for multi-label
    data the probability above which a label is given."""

    net: FusionNet
    labels: list[str]
    views: tuple[str, ...]  # the views it reads: those asked for that the training items had
    multi_label: bool = False
    threshold: float = 0.5
    training: dict = field(default_factory=dict)  # figures for the JSON: items, per label, loss, seconds, ...

    @property
    def fusion(self) -> str:
        return self.net.fusion

    @property
    def dim(self) -> int:
        return self.net.dim

    @property
    def view_weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(VIEWS, self.net.view_weights.tolist())}

    def _use(self) -> np.ndarray:
        return np.isin(np.array(VIEWS), self.views)

    def covered(self, views: Views) -> np.ndarray:
        """(N,) bool: items with at least one view this classifier reads (the others get no label)."""
        return (check_views(views, self.dim).mask & self._use()).any(axis=1)

    def predict_proba(self, views: Views, batch: int = BATCH) -> np.ndarray:
        """(N, L) float32: softmax probabilities (single-label) or per-label sigmoids (multi-label). An item
        with no view the classifier reads gets the labels' base rates (its bias alone)."""
        views, use = check_views(views, self.dim), torch.from_numpy(self._use())
        out = np.empty((len(views.mask), len(self.labels)), np.float32)
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(out), batch):
                # from_numpy shares memory with the caller's array: no copy of the whole (N, V, D) input
                vectors = torch.from_numpy(np.ascontiguousarray(views.vectors[start:start + batch]))
                mask = torch.from_numpy(np.ascontiguousarray(views.mask[start:start + batch])) & use
                logits = self.net(vectors, mask)
                probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)
                out[start:start + batch] = probs.numpy()
        return out

    def decide(self, proba: np.ndarray, covered: np.ndarray | None = None) -> np.ndarray:
        """(N, L) bool labels given: single-label the best; multi-label those ≥ threshold and at least the
        best (every training item had a label, so "none" is never what it learnt). ``covered`` False: none."""
        proba = np.asarray(proba, np.float32)
        given = np.zeros(proba.shape, bool)
        if proba.size:
            given[np.arange(len(proba)), proba.argmax(axis=1)] = True
        if self.multi_label:
            given |= proba >= self.threshold
        if covered is not None:
            given &= np.asarray(covered, bool)[:, None]
        return given

    def predict(self, views: Views, batch: int = BATCH) -> list[list[tuple[int, float]]]:
        """Each item's labels as (label index, probability), best first; [] for an item it cannot read."""
        proba = self.predict_proba(views, batch)
        given = self.decide(proba, self.covered(views))
        if not self.multi_label:  # one label an item (or none): no per-item sort (100k items: ~1 s less)
            best, kept = proba.argmax(axis=1), given.any(axis=1)
            scores = proba[np.arange(len(proba)), best]
            return [[(b, s)] if k else [] for b, s, k in zip(best.tolist(), scores.tolist(), kept.tolist())]
        out = []
        for row, keep in zip(proba, given):
            chosen = np.flatnonzero(keep)
            out.append([(int(i), float(row[i])) for i in chosen[np.argsort(-row[chosen], kind="stable")]])
        return out

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``stem.safetensors`` (tensors) and ``stem.json`` (the rest), each atomically."""
        from .classifier_files import save_classifier
        return save_classifier(self, stem)

    @classmethod
    def load(cls, stem: str | Path) -> "Classifier":
        """``load_classifier(stem)``."""
        return load_classifier(stem)


def load_classifier(stem: str | Path) -> Classifier:
    """Read a classifier saved by ``Classifier.save``; ModelLoadError for anything that does not add up."""
    from .classifier_files import load
    return load(stem)
