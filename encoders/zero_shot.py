"""Zero-shot tagging: each label becomes a vector through prompt templates, items are scored against them.

A label's vector is the normalised mean of its templates' normalised embeddings (CLIP's prompt
ensembling: "a photo of {}." and its variants average out the wording and score several points better
than the bare word). Each modality has its own templates because each meets the labels' text across its
own gap: pictures are photographed, sounds heard, notes simply say the word. Numpy only; the text tower is
passed in as ``encode_texts`` (e.g. ``ClipEncoder.encode_texts``).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from mmsearch.modalities import AUDIO, IMAGE, TEXT

from .views import CAPTION, VIEWS, Views

SLOT = "{}"
BATCH = 256  # texts per encode_texts call
DEFAULT_TEMPLATES: dict[str, list[str]] = {
    IMAGE: ["a photo of {}.", "a picture of {}.", "an image of {}.", "a close-up photo of {}.",
            "a good photo of {}.", "a photo showing {}."],
    AUDIO: ["the sound of {}.", "a recording of {}.", "the sound of {} can be heard.", "an audio clip of {}.",
            "{} sounds."],
    TEXT: ["{}", "{}.", "a note about {}.", "a text about {}."],
}


def check_templates(templates: Sequence[str]) -> list[str]:
    """Templates as given, or a ValueError naming the first that lacks exactly one ``{}`` slot."""
    templates = list(templates)
    if not templates:
        raise ValueError("no prompt templates: give at least one, e.g. 'a photo of {}.'")
    for template in templates:
        if not isinstance(template, str) or template.count(SLOT) != 1:
            raise ValueError(f"prompt template {str(template)[:80]!r} must contain exactly one {SLOT} "
                             f"where the label goes")
    return templates


def check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if not labels:
        raise ValueError("no labels to tag with")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label {label!r} must be a non-empty string")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    return labels


def label_vectors(encode_texts: Callable[[list[str]], np.ndarray], labels: Sequence[str],
                  templates: Sequence[str]) -> np.ndarray:
    """(L, D) float32: each label's mean template embedding, normalised. ``encode_texts`` gets the label ×
    template texts in batches of BATCH (one call of 60,000 texts held 15 GB: measured)."""
    labels, templates = check_labels(labels), check_templates(templates)
    # replace, not str.format: a label or template with other braces in it stays as written
    texts = [template.replace(SLOT, label) for label in labels for template in templates]
    embedded = np.concatenate([np.asarray(encode_texts(texts[i:i + BATCH]), np.float64)
                               for i in range(0, len(texts), BATCH)])
    if embedded.ndim != 2 or embedded.shape[0] != len(texts):
        raise ValueError(f"encode_texts returned shape {embedded.shape} for {len(texts)} texts")
    embedded /= np.maximum(np.linalg.norm(embedded, axis=1, keepdims=True), 1e-12)
    mean = embedded.reshape(len(labels), len(templates), -1).mean(axis=1)
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def zero_shot_scores(views: Views, label_vectors: Mapping[str, np.ndarray], caption_weight: float = 0.0
                     ) -> np.ndarray:
    """(N, L) cosine scores: each item's content view against its modality's label vectors (keys image,
    audio, text). With ``caption_weight`` > 0 a caption is scored against the text label vectors and mixed
    in, (content + w·caption) / (1 + w); off by default because text–text cosines run higher than the
    cross-modal ones and would swamp them. NaN for an item with nothing to score (no content view)."""
    vectors, mask = np.asarray(views.vectors, np.float32), np.asarray(views.mask, bool)
    width = {np.asarray(v).shape for v in label_vectors.values()}
    if len(width) != 1 or len(next(iter(width))) != 2:
        raise ValueError("label vectors must be (L, D) and alike for every modality")
    count, dim = next(iter(width))
    if dim != vectors.shape[2]:
        raise ValueError(f"label vectors have dimension {dim}, the views {vectors.shape[2]}")
    content = np.full((len(vectors), count), np.nan, np.float32)
    for modality in (IMAGE, AUDIO, TEXT):
        rows = np.flatnonzero(mask[:, VIEWS.index(modality)])
        if len(rows) and modality in label_vectors:
            content[rows] = vectors[rows, VIEWS.index(modality)] @ np.asarray(label_vectors[modality], np.float32).T
    if caption_weight <= 0 or TEXT not in label_vectors:
        return content
    rows = np.flatnonzero(mask[:, VIEWS.index(CAPTION)])
    caption = vectors[rows, VIEWS.index(CAPTION)] @ np.asarray(label_vectors[TEXT], np.float32).T
    own = content[rows]
    content[rows] = np.where(np.isnan(own), caption, (own + caption_weight * caption) / (1 + caption_weight))
    return content


def top_labels(scores: np.ndarray, top: int = 1, min_score: float | None = None
               ) -> list[list[tuple[int, float]]]:
    """Each item's labels as (label index, score), best first. Default: its ``top`` best, so every item
    gets one; with ``min_score`` only those scoring at least that, possibly none. A row of NaN (nothing
    to score) gets none; ties go to the lower label index."""
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, L), not {scores.shape}")
    top = min(top, scores.shape[1])
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")[:, :top]
    best = np.take_along_axis(scores, order, axis=1)
    keep = np.isfinite(best) if min_score is None else np.isfinite(best) & (best >= min_score)
    return [[(int(i), float(s)) for i, s, k in zip(row, values, kept) if k]
            for row, values, kept in zip(order, best, keep)]
