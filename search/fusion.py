"""Fusion formulas, as production engines define them.

- early: normalise(Σ wᵢ·qᵢ) — one vector searched once (Marqo's weighted queries, rclip's +/- terms).
- rrf: Σ wᵢ / (k + rankᵢ), ranks from 1 (reciprocal rank fusion; Weaviate rankedFusion, Qdrant RRF).
- relative: Σ wᵢ · (sᵢ − minᵢ)/(maxᵢ − minᵢ) (Weaviate relativeScoreFusion).
- dbsf: Σ wᵢ · (sᵢ − (μᵢ − 3σᵢ))/(6σᵢ), μ and the sample σ of each list's scores (Qdrant's
  distribution-based score fusion; a list of one score, or of equal scores, gives 0.5).
An item missing from a part's list contributes nothing for that part; negative weights push down.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mmsearch.errors import MMSearchError

from .tables import CAPTION, CONTENT, PASSAGE


def normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise MMSearchError("the query parts cancel each other out")
    return (vector / norm).astype(np.float32)


def early(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return normalise(np.sum([w * np.asarray(v, np.float64) for v, w in zip(vectors, weights)], axis=0))


def rrf(ranked: Sequence[Sequence[int]], weights: Sequence[float], k: int = 60) -> dict[int, float]:
    return rrf_ranks([{item_id: rank for rank, item_id in enumerate(ids, start=1)} for ids in ranked], weights, k)


def rrf_ranks(ranks: Sequence[Mapping[int, int]], weights: Sequence[float], k: int = 60) -> dict[int, float]:
    """RRF over lists given as item id → rank (from 1), for lists known only at the items that matter."""
    scores: dict[int, float] = {}
    for by_id, weight in zip(ranks, weights):
        for item_id, rank in by_id.items():
            scores[item_id] = scores.get(item_id, 0.0) + weight / (k + rank)
    return scores


def relative(scored: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float]) -> dict[int, float]:
    return scaled([(dict(hits), *min_max([s for _, s in hits])) for hits in scored], weights, flat=1.0)


def dbsf(scored: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float]) -> dict[int, float]:
    return scaled([(dict(hits), *three_sigma([s for _, s in hits])) for hits in scored], weights, flat=0.5)


def min_max(values: Sequence[float]) -> tuple[float, float]:
    return (float(min(values)), float(max(values))) if len(values) else (0.0, 0.0)


def three_sigma(values: Sequence[float]) -> tuple[float, float]:
    """(μ − 3σ, μ + 3σ) with the sample σ; equal ends when there are fewer than two values."""
    if len(values) < 2:
        return 0.0, 0.0
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
    return mean - 3 * std, mean + 3 * std


def scaled(lists: Sequence[tuple[Mapping[int, float], float, float]], weights: Sequence[float], flat: float
           ) -> dict[int, float]:
    """Σ w · (s − low)/(high − low) over lists given as (item id → score, low, high); ``flat`` where the
    range is empty (Weaviate gives 1, Qdrant 0.5)."""
    fused: dict[int, float] = {}
    for (scores, low, high), weight in zip(lists, weights):
        span = high - low
        for item_id, score in scores.items():
            norm = (score - low) / span if span > 0 else flat
            fused[item_id] = fused.get(item_id, 0.0) + weight * norm
    return fused


def fuse_parts(parts: Mapping[str, np.ndarray], modality: str, weights: Mapping[str, float]) -> np.ndarray:
    """normalise(w[modality]·content + w[text]·caption); a lone content vector is returned unchanged."""
    content = np.asarray(parts[CONTENT], np.float32)
    if CAPTION not in parts:
        return content.copy()
    fused = weights.get(modality, 1.0) * content.astype(np.float64) + \
        weights.get("text", 1.0) * np.asarray(parts[CAPTION], np.float64)
    norm = np.linalg.norm(fused)
    return (fused / norm).astype(np.float32) if norm > 1e-6 else content.copy()


def item_vector(rows: Sequence, modality: str, weights: Mapping[str, float]) -> np.ndarray | None:
    """An item's one vector from its stored vectors (store.StoredVector rows): its content (a long note's:
    the mean of its passages, which read all of it) fused with its caption; None without a content vector."""
    parts = {row.kind: row.vector for row in rows if row.kind == CAPTION}
    content = content_vector(rows)
    if content is None:
        return None
    return fuse_parts({**parts, CONTENT: content}, modality, weights)


def content_vector(rows: Sequence) -> np.ndarray | None:
    """An item's content from its stored vectors: its content vector, or for a long note the mean of its
    passages (which read all of it, where the content vector read its opening); None without one."""
    content = next((row.vector for row in rows if row.kind == CONTENT), None)
    passages = [row.vector for row in rows if row.kind == PASSAGE]
    if content is None or not passages:
        return content
    return normalise(np.sum(passages, axis=0, dtype=np.float64))


def coverage(a: np.ndarray, b: np.ndarray) -> float:
    """How well two sets of vectors (rows) cover each other: the lowest, over every vector of either, of its
    best similarity in the other (1.0: each has an identical counterpart)."""
    similarity = np.asarray(a, np.float32) @ np.asarray(b, np.float32).T
    return float(min(similarity.max(axis=1).min(), similarity.max(axis=0).min()))
