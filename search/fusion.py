"""Fusion formulas, as production engines define them.

- early: normalise(Σ wᵢ·qᵢ) — one vector searched once (Marqo's weighted queries, rclip's +/- terms).
- rrf: Σ wᵢ / (k + rankᵢ), ranks from 1 (reciprocal rank fusion; Weaviate rankedFusion, Qdrant RRF).
- relative: Σ wᵢ · (sᵢ − minᵢ)/(maxᵢ − minᵢ) (Weaviate relativeScoreFusion).
An item missing from a part's list contributes nothing for that part; negative weights push down.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmsearch.errors import MMSearchError


def normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise MMSearchError("the query parts cancel each other out")
    return (vector / norm).astype(np.float32)


def early(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return normalise(np.sum([w * np.asarray(v, np.float64) for v, w in zip(vectors, weights)], axis=0))


def weighted_mean(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """An item's fused vector: normalise(Σ wₘ·eₘ); the mean's 1/n vanishes in the normalisation."""
    return early(vectors, weights)


def rrf(ranked: Sequence[Sequence[int]], weights: Sequence[float], k: int = 60) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ids, weight in zip(ranked, weights):
        for rank, item_id in enumerate(ids, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + weight / (k + rank)
    return scores


def relative(scored: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float]) -> dict[int, float]:
    fused: dict[int, float] = {}
    for hits, weight in zip(scored, weights):
        if not hits:
            continue
        values = [s for _, s in hits]
        low, high = min(values), max(values)
        span = high - low
        for item_id, score in hits:
            norm = (score - low) / span if span > 0 else 1.0
            fused[item_id] = fused.get(item_id, 0.0) + weight * norm
    return fused
