"""What the engine asks of one part of the vector index, whichever engine holds its vectors (FAISS files:
search.vector_index; a Milvus collection: search.milvus_index), and the item logic they share: ids are
vector ids (search.tables.vector_id), an item scores its best vector, and a search returns k distinct items.

Partitioned, index_sync, mmsearch.index_cache and search.query use only what this class declares."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .batching import Batcher
from .index_types import IndexState
from .tables import item_of

Hits = tuple[np.ndarray, np.ndarray, np.ndarray]  # per query row: scores, item ids, best vector ids (-1: none)
VectorSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, k) → scores, vector ids


class VectorStore:
    """Inner product over L2-normalised vectors, ids = vector ids. A subclass reads its ids (_read_ids), and
    gives the vector search that search() deepens (_vector_search); the rest is declared here."""

    max_depth: int | None = None  # most vectors one search may ask for (None: no limit)

    def __init__(self, state: IndexState):
        self.state = state
        self.nprobe = 16  # IVF index types: lists visited per query (recall against speed)
        self.batcher: Batcher | None = None  # a server's: concurrent unfiltered searches share one call
        self._ids: np.ndarray | None = None  # kept until the next change
        self._items: np.ndarray | None = None

    # --- contents ---------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return len(self.ids())

    def ids(self) -> np.ndarray:
        """Vector ids, in the store's order."""
        if self._ids is None:
            self._ids = self._read_ids()
        return self._ids

    def item_ids(self) -> np.ndarray:
        if self._items is None:
            self._items = np.unique(item_of(self.ids()))
        return self._items

    def vector_ids_of(self, items: np.ndarray) -> np.ndarray:
        """The ids of every vector these items have here."""
        ids = self.ids()
        return ids[np.isin(item_of(ids), np.asarray(items, np.int64))]

    def _changed(self) -> None:
        self._ids, self._items = None, None

    @property
    def is_trained(self) -> bool:
        return True

    def train(self, sample: np.ndarray) -> None:
        """Exact stores need no training (index_sync trains only what is not trained)."""

    # --- search -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> Hits:
        """The top-k distinct items per query row (allowed_ids: item ids), each scored by its best vector;
        rows with fewer than k items are padded with -1 ids and -inf scores. The search goes deeper until k
        items are found or every reachable vector was seen, so one item's many vectors never crowd out
        the rest."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        k = max(1, int(k))
        out = (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64),
               np.full((len(queries), k), -1, np.int64))
        allowed = None if allowed_ids is None else self.vector_ids_of(allowed_ids)
        reachable = min(self.ntotal if allowed is None else len(allowed), self.max_depth or np.inf)
        if reachable == 0:
            return out
        search = self._vector_search(allowed_ids, allowed)
        # A scan reads the same vectors at any depth (a Flat scan every vector; IVF its probed lists), but
        # FAISS keeps the best ``depth`` in a heap, which grows dear: ask for as many vectors as the items
        # hold on average, and go deeper by what a row found only where that was too few.
        per_item = self.ntotal / max(1, len(self.item_ids()))
        depth = int(min(reachable, int(k * per_item) + 8))
        batch = search(queries, depth)  # every row in one call; deeper only where needed
        for row, query in enumerate(queries):
            row_depth, (scores, ids) = depth, (batch[0][row:row + 1], batch[1][row:row + 1])
            while True:
                found = ids[0] >= 0
                scores, ids = scores[0][found], ids[0][found]
                _, first = np.unique(item_of(ids), return_index=True)
                first = np.sort(first)  # each item at its best vector, best items first
                if len(first) >= k or row_depth >= reachable or len(ids) < row_depth:
                    break
                row_depth = int(min(reachable, max(2 * row_depth, row_depth * k / max(1, len(first)) * 1.25)))
                scores, ids = search(query[None], row_depth)
            take = first[:k]
            out[0][row, :len(take)], out[1][row, :len(take)] = scores[take], item_of(ids[take])
            out[2][row, :len(take)] = ids[take]
        return out

    # --- what each store implements ------------------------------------------------------------------
    def _read_ids(self) -> np.ndarray:
        raise NotImplementedError

    def _vector_search(self, allowed_items: np.ndarray | None, allowed: np.ndarray | None) -> VectorSearch:
        """Top-k single vectors among these items' (allowed: their vector ids here)."""
        raise NotImplementedError

    @property
    def device(self) -> str:
        raise NotImplementedError

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def remove(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    def reconstruct(self, vector_id: int) -> np.ndarray:
        """One vector; RuntimeError when it is not here."""
        raise NotImplementedError

    def plain_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One unfiltered vector search (a server batches concurrent ones: search.batching)."""
        raise NotImplementedError

    def scores_above(self, query: np.ndarray, floor: float, allowed_ids: np.ndarray | None = None) -> np.ndarray:
        """The scores of every item whose best vector scores above ``floor``: the head of a full ranking."""
        raise NotImplementedError

    def vectors(self, items: Sequence[int]) -> dict[int, np.ndarray] | None:
        """Each of these items' vectors held here, one (count, dim) matrix per item; None when it cannot."""
        raise NotImplementedError

    def memory_bytes(self) -> int:
        """What its vectors take in this process's memory."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError


def best_per_item(items: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, each one's best score) of vectors given by their items and scores."""
    if len(items) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    order = np.lexsort((-scores, items))
    items, scores = items[order], scores[order]
    first = np.concatenate([[True], items[1:] != items[:-1]])
    return items[first], scores[first]
