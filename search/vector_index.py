"""FAISS vector index of every stored vector (content, caption, passages, segments), keyed by vector id
(search.tables.vector_id: the item's id and the vector's slot), searched for items: an item scores its
best-matching vector's score, and a search returns k distinct items. A cache of SQL (search.index_sync).

The index file sits beside a small JSON sidecar naming the SQL generation it reflects, the
encoder that produced its vectors and its FAISS factory string.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from mmsearch.files import atomic_write
from mmsearch.errors import MMSearchError, first_line

from .tables import FUSED, item_of

Hits = tuple[np.ndarray, np.ndarray, np.ndarray]  # per query row: scores, item ids, best vector ids (-1: none)


@dataclass
class IndexState:
    generation: int
    encoder: str
    dim: int
    factory: str
    weights: str = "{}"  # JSON of the per-modality weights item vectors are fused with (not in the index)
    space: str = FUSED  # which items: all, or one modality's (mmsearch.modalities)
    ids: str = "item"  # what its ids are: "vector" (tables.vector_id); "item": a file from before passages

    def layout(self) -> str:
        return f"{self.space} {self.encoder}/{self.dim}d/{self.factory}/{self.ids} ids"

    def same_layout(self, other: "IndexState") -> bool:
        return (self.space, self.encoder, self.dim, self.factory, self.ids) == \
            (other.space, other.encoder, other.dim, other.factory, other.ids)

    def weight_map(self) -> dict[str, float]:
        return json.loads(self.weights)


class FaissIndex:
    """Inner-product index over L2-normalised vectors, ids = vector ids. Searches on a GPU when faiss has one."""

    def __init__(self, state: IndexState, index: faiss.Index | None = None):
        self.state = state
        self.cpu = index if index is not None else self._empty(state)
        self.nprobe = 16  # IVF lists visited per query: recall against speed
        self._gpu: faiss.Index | None = None
        self._gpu_stale = True
        self._ids: np.ndarray | None = None  # id_map as an array, kept until the next change
        self._items: np.ndarray | None = None  # the item ids among them

    @staticmethod
    def _empty(state: IndexState) -> faiss.Index:
        try:
            inner = faiss.index_factory(state.dim, state.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise MMSearchError(f"invalid index_type {state.factory!r}: {faiss_reason(exc)}") from None
        return faiss.IndexIDMap2(inner)

    # --- persistence ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> "FaissIndex | None":
        """The cached index, or None when there is none or it cannot be read (it is only a cache)."""
        sidecar = path.with_suffix(path.suffix + ".json")
        try:
            state = IndexState(**json.loads(sidecar.read_text()))
            index = faiss.read_index(str(path))
        except (OSError, ValueError, TypeError, RuntimeError):
            return None
        if index.d != state.dim:
            return None
        return cls(state, index)

    def save(self, path: Path) -> None:
        """Write index then sidecar, each atomically; a crash between leaves a sidecar that under-claims,
        which the next sync repairs by re-applying changes (idempotent)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: faiss.write_index(self.cpu, tmp))
        sidecar = path.with_suffix(path.suffix + ".json")
        atomic_write(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(self.state.__dict__)))

    # --- contents ---------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    def ids(self) -> np.ndarray:
        """Vector ids, in the index's order."""
        if self._ids is None:
            self._ids = faiss.vector_to_array(self.cpu.id_map).astype(np.int64)
        return self._ids

    def item_ids(self) -> np.ndarray:
        if self._items is None:
            self._items = np.unique(item_of(self.ids()))
        return self._items

    def vector_ids_of(self, items: np.ndarray) -> np.ndarray:
        """The ids of every vector these items have here."""
        ids = self.ids()
        return ids[np.isin(item_of(ids), np.asarray(items, np.int64))]

    @property
    def device(self) -> str:
        return "gpu" if faiss.get_num_gpus() > 0 and self._gpu is not None else "cpu"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if not self.cpu.is_trained:
            self.cpu.train(vectors)
        self.cpu.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
        self._gpu_stale, self._ids, self._items = True, None, None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.cpu.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, np.int64)))
            self._gpu_stale, self._ids, self._items = True, None, None

    def reconstruct(self, vector_id: int) -> np.ndarray:
        return self.cpu.reconstruct(int(vector_id))

    # --- search -----------------------------------------------------------------------------------
    def _searcher(self) -> faiss.Index:
        if faiss.get_num_gpus() == 0:
            return self.cpu
        if self._gpu_stale:
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self.cpu)
            except RuntimeError:  # index types without a GPU version keep searching on the CPU
                self._gpu = None
            self._gpu_stale = False
        return self._gpu or self.cpu

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
        reachable = self.ntotal if allowed is None else len(allowed)
        if reachable == 0:
            return out
        # A scan costs the same at any depth (a Flat scan reads every vector; IVF its probed lists): ask
        # deep enough at once that k items are found in one scan even when each has many vectors here.
        per_item = self.ntotal / max(1, len(self.item_ids()))
        for row, query in enumerate(queries):
            depth = min(reachable, int(2 * k * per_item) + 8)
            while True:
                scores, ids = self.search_vectors(query[None], depth, allowed)
                found = ids[0] >= 0
                scores, ids = scores[0][found], ids[0][found]
                _, first = np.unique(item_of(ids), return_index=True)
                first = np.sort(first)  # each item at its best vector, best items first
                if len(first) >= k or depth >= reachable or len(ids) < depth:
                    break
                depth = min(reachable, depth * 4)
            take = first[:k]
            out[0][row, :len(take)], out[1][row, :len(take)] = scores[take], item_of(ids[take])
            out[2][row, :len(take)] = ids[take]
        return out

    def search_vectors(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vector ids) per query row over single vectors (allowed: vector ids)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        k = max(1, min(int(k), self.ntotal or 1))
        if allowed is None and faiss.try_extract_index_ivf(self.cpu.index) is None:
            return self._searcher().search(queries, k)
        params, _selector = self._params(allowed)
        return self.cpu.search(queries, k, params=params)

    def _params(self, allowed_ids: np.ndarray | None) -> tuple[faiss.SearchParameters, faiss.IDSelector | None]:
        """IVF lists to probe, and an id selector that filters inside the scan (so a selective filter still
        yields k hits when k exist). The selector comes back too: faiss keeps only a raw pointer to it, so
        the caller holds it until the search is done."""
        ivf = faiss.try_extract_index_ivf(self.cpu.index)
        params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, ivf.nlist)) if ivf is not None \
            else faiss.SearchParameters()
        selector = faiss.IDSelectorBatch(np.asarray(allowed_ids, np.int64)) if allowed_ids is not None else None
        if selector is not None:
            params.sel = selector
        return params, selector

    def scores_above(self, query: np.ndarray, floor: float, allowed_ids: np.ndarray | None = None) -> np.ndarray:
        """The scores of every item whose best vector scores above ``floor`` (a range search): the head of
        a full ranking of items."""
        query = np.ascontiguousarray(np.atleast_2d(query), np.float32)
        if self.ntotal == 0:
            return np.zeros(0, np.float32)
        allowed = None if allowed_ids is None else self.vector_ids_of(allowed_ids)
        params, _selector = self._params(allowed)
        try:
            _, scores, ids = self.cpu.range_search(query, float(floor), params=params)
        except RuntimeError:  # an index type without range search: the head of the ranking, deep enough
            scores, ids = self.search_vectors(query, min(self.ntotal, 10_000), allowed)
            keep = (ids[0] >= 0) & (scores[0] >= floor)
            scores, ids = scores[0][keep], ids[0][keep]
        return best_per_item(item_of(ids), scores)[1]

    def vectors(self, items: Sequence[int]) -> dict[int, np.ndarray] | None:
        """Each of these items' vectors it holds, as one (count, dim) matrix per item; None when the index
        type cannot give them back."""
        if faiss.try_extract_index_ivf(self.cpu.index) is not None:
            return None  # IVF lists keep no id → vector map
        ids = self.vector_ids_of(np.asarray(list(items), np.int64))
        out: dict[int, list[np.ndarray]] = {}
        for vector_id in ids:
            out.setdefault(int(item_of(vector_id)), []).append(self.cpu.reconstruct(int(vector_id)))
        return {item: np.stack(rows) for item, rows in out.items()}


def best_per_item(items: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, each one's best score) of vectors given by their items and scores."""
    if len(items) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    order = np.lexsort((-scores, items))
    items, scores = items[order], scores[order]
    first = np.concatenate([[True], items[1:] != items[:-1]])
    return items[first], scores[first]


class Partitioned:
    """The main index: one FaissIndex per item modality, searched together and merged by score. Every vector
    is held once; late fusion ranks within one part, and a modality filter leaves the other parts unread."""

    def __init__(self, parts: dict[str, FaissIndex], state: IndexState):
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


def faiss_reason(exc: RuntimeError) -> str:
    """faiss prefixes its messages with a C++ signature and source location; keep the reason."""
    text = first_line(exc, 10_000)
    return text.split(": ", 1)[1] if text.startswith("Error in ") and ": " in text else text
