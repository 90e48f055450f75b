"""The main vector index: one part per item modality (a search.vector_store.VectorStore: FAISS or Milvus),
searched together and merged by score."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .index_types import IndexState
from .vector_store import Hits, VectorStore


class Partitioned:
    """The main index: one part per item modality, searched together and merged by score. Every vector
    is held once; late fusion ranks within one part, and a modality filter leaves the other parts unread."""

    def __init__(self, parts: dict[str, VectorStore], state: IndexState):
        self.parts = parts
        self.state = state  # the whole: layout as configured, generation of the part furthest behind

    @property
    def ntotal(self) -> int:
        return sum(part.ntotal for part in self.parts.values())

    def ids(self) -> np.ndarray:
        return np.concatenate([part.ids() for part in self.parts.values()] or [np.zeros(0, np.int64)])

    def item_ids(self) -> np.ndarray:
        return np.concatenate([part.item_ids() for part in self.parts.values()] or [np.zeros(0, np.int64)])

    @property
    def device(self) -> str:
        return "gpu" if any(part.device == "gpu" for part in self.parts.values()) else "cpu"

    def only(self, names: Sequence[str]) -> "Partitioned":
        return Partitioned({n: p for n, p in self.parts.items() if n in names}, self.state)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> Hits:
        """Top-k items per query row over all parts (an item lives in one part); -1 ids pad rows with fewer."""
        queries = np.atleast_2d(queries)
        found = [part.search(queries, k, allowed_ids) for part in self.parts.values() if part.ntotal]
        if not found:
            empty = np.full((len(queries), 1), -1, np.int64)
            return np.full((len(queries), 1), -np.inf, np.float32), empty, empty.copy()
        if len(found) == 1:  # one part holds vectors: its ranking is the whole one
            return found[0]
        scores, items, vectors = (np.concatenate([hits[n] for hits in found], axis=1) for n in range(3))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :max(1, int(k))]
        return tuple(np.take_along_axis(a, order, 1) for a in (scores, items, vectors))

    def scores_above(self, query: np.ndarray, floor: float, allowed_ids: np.ndarray | None = None) -> np.ndarray:
        return np.concatenate([part.scores_above(query, floor, allowed_ids) for part in self.parts.values()]
                              or [np.zeros(0, np.float32)])

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray] | None:
        out: dict[int, np.ndarray] = {}
        for part in self.parts.values():
            found = part.vectors(ids)
            if found is None:
                return None
            out.update(found)
        return out

    def reconstruct(self, vector_id: int) -> np.ndarray:
        for part in self.parts.values():
            try:
                return part.reconstruct(vector_id)
            except RuntimeError:
                continue
        raise KeyError(vector_id)
