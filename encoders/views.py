"""An item's vectors as a classifier reads them: one slot per view, zeros and a False mask where missing.

Every classifier (zero-shot or trained) takes the same fixed-width input so that a model trained on one
library reads any other: image = an image's content vector, audio = a sound's, text = a note's (the
wiring passes the mean of its passages when it has them), caption = a caption's vector (text tower).
Numpy only: ``evaluate`` and zero-shot scoring need no torch.
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from mmsearch.modalities import MODALITIES

CAPTION = "caption"
VIEWS: tuple[str, ...] = (*MODALITIES, CAPTION)  # image, audio, text, caption: the slot order of every file


class Views(NamedTuple):
    vectors: np.ndarray  # (N, len(VIEWS), D) float32, zeros where missing
    mask: np.ndarray  # (N, len(VIEWS)) bool

    def only(self, names: Iterable[str]) -> "Views":
        """``select_views(self, names)``: the same items with only these views."""
        return select_views(self, names)


def view_index(names: Iterable[str]) -> list[int]:
    """Slot numbers of view names, refusing a name that is not a view (it would silently match nothing)."""
    out = []
    for name in names:
        if name not in VIEWS:
            raise ValueError(f"unknown view {str(name)[:40]!r}: use {', '.join(VIEWS)}")
        out.append(VIEWS.index(name))
    return out


def item_views(modality: str, content: np.ndarray | None = None, caption: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
    """One item's views from its content vector (its view is its modality) and caption vector."""
    view_index([modality])
    parts = {modality: content, CAPTION: caption}
    return {name: vector for name, vector in parts.items() if vector is not None}


def build_views(items: Sequence[Mapping[str, np.ndarray | None]], dim: int | None = None) -> Views:
    """Views from per-item ``{view: vector}`` dicts. Vectors are renormalised (a mean of passages is not
    unit length); a wrong dimension or a non-finite or zero vector is refused, naming the item."""
    if dim is None:
        dim = next((len(np.ravel(v)) for item in items for v in item.values() if v is not None), None)
        if dim is None:
            raise ValueError("no vectors to take the dimension from: pass dim")
    vectors = np.zeros((len(items), len(VIEWS), dim), np.float32)
    mask = np.zeros((len(items), len(VIEWS)), bool)
    for row, item in enumerate(items):
        for name, vector in item.items():
            if vector is None:
                continue
            slot = view_index([name])[0]
            vector = np.asarray(vector, np.float32).ravel()
            if vector.shape != (dim,):
                raise ValueError(f"item {row}: {name} vector has dimension {vector.shape[0]}, not {dim}")
            vectors[row, slot], mask[row, slot] = vector, True
    # renormalised all at once (one item at a time was most of classifying 100k items' time)
    norms = np.sqrt(np.einsum("nvd,nvd->nv", vectors, vectors))  # float32: unit vectors cannot overflow it
    bad = mask & ~(np.isfinite(norms) & (norms >= 1e-12))
    if bad.any():
        row, slot = np.argwhere(bad)[0]
        raise ValueError(f"item {row}: {VIEWS[slot]} vector is not a finite, non-zero vector")
    vectors /= np.where(mask, norms, np.float32(1))[:, :, None]
    return Views(vectors, mask)


views_from = build_views  # the name mmsearch/tagging.py calls it by


def check_views(views: Views, dim: int | None = None) -> Views:
    """The shapes and types every classifier relies on; missing slots forced to zero."""
    vectors, mask = np.asarray(views.vectors), np.asarray(views.mask, bool)
    if vectors.ndim != 3 or vectors.shape[1] != len(VIEWS) or mask.shape != vectors.shape[:2]:
        raise ValueError(f"views must be (N, {len(VIEWS)}, D) vectors with an (N, {len(VIEWS)}) mask, "
                         f"not {vectors.shape} and {mask.shape}")
    if dim is not None and vectors.shape[2] != dim:
        raise ValueError(f"views have dimension {vectors.shape[2]}, the classifier {dim}")
    return Views(vectors.astype(np.float32, copy=False), mask)


def select_views(views: Views, names: Iterable[str]) -> Views:
    """The same items with only the named views (the others zeroed and masked off), e.g. image alone."""
    keep = np.zeros(len(VIEWS), bool)
    keep[view_index(names)] = True
    views = check_views(views)
    mask = views.mask & keep
    return Views(np.where(mask[..., None], views.vectors, np.float32(0)), mask)


def subset(views: Views, rows: np.ndarray) -> Views:
    """Some of the items (an index array or a boolean mask over them), e.g. a cross-validation fold."""
    return Views(views.vectors[rows], views.mask[rows])
