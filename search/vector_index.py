"""FAISS vector index keyed by item id: a cache of the vectors in SQL, rebuilt or caught up on open.

The index file sits beside a small JSON sidecar naming the SQL generation it reflects, the
encoder that produced its vectors and its FAISS factory string.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from mmsearch.files import atomic_write
from mmsearch.errors import MMSearchError, first_line

from .store import Store

from .tables import FUSED


@dataclass
class IndexState:
    generation: int
    encoder: str
    dim: int
    factory: str
    weights: str = "{}"  # JSON of the per-modality fusion weights the item vectors were made with
    space: str = FUSED  # which vectors: fused item vectors, or one modality's items (mmsearch.modalities)

    def layout(self) -> str:
        return f"{self.space} {self.encoder}/{self.dim}d/{self.factory}/weights {self.weights}"

    def same_layout(self, other: "IndexState") -> bool:
        return (self.space, self.encoder, self.dim, self.factory, self.weights) == \
            (other.space, other.encoder, other.dim, other.factory, other.weights)

    def weight_map(self) -> dict[str, float]:
        return json.loads(self.weights)


class FaissIndex:
    """Inner-product index over L2-normalised vectors, ids = item ids. Searches on a GPU when faiss has one."""

    def __init__(self, state: IndexState, index: faiss.Index | None = None):
        self.state = state
        self.cpu = index if index is not None else self._empty(state)
        self.nprobe = 16  # IVF lists visited per query: recall against speed
        self._gpu: faiss.Index | None = None
        self._gpu_stale = True

    @staticmethod
    def _empty(state: IndexState) -> faiss.Index:
        try:
            inner = faiss.index_factory(state.dim, state.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise MMSearchError(f"invalid index_type {state.factory!r}: {_faiss_reason(exc)}") from None
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
        return faiss.vector_to_array(self.cpu.id_map).astype(np.int64)

    @property
    def device(self) -> str:
        return "gpu" if faiss.get_num_gpus() > 0 and self._gpu is not None else "cpu"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if not self.cpu.is_trained:
            self.cpu.train(vectors)
        self.cpu.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
        self._gpu_stale = True

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.cpu.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, np.int64)))
            self._gpu_stale = True

    def reconstruct(self, item_id: int) -> np.ndarray:
        return self.cpu.reconstruct(int(item_id))

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

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; -1 ids pad rows with fewer than k hits."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        k = max(1, min(int(k), self.ntotal or 1))
        if allowed_ids is None and faiss.try_extract_index_ivf(self.cpu.index) is None:
            return self._searcher().search(queries, k)
        params, _selector = self._params(allowed_ids)
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
        """The scores of every vector scoring above ``floor`` (a range search): the head of a full ranking."""
        query = np.ascontiguousarray(np.atleast_2d(query), np.float32)
        if self.ntotal == 0:
            return np.zeros(0, np.float32)
        params, _selector = self._params(allowed_ids)
        try:
            return self.cpu.range_search(query, float(floor), params=params)[1]
        except RuntimeError:  # an index type without range search: the head of the ranking, deep enough
            scores = self.search(query, min(self.ntotal, 10_000), allowed_ids)[0][0]
            return scores[scores >= floor]

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray] | None:
        """The stored vectors of those ids it holds; None when the index type cannot give them back."""
        if faiss.try_extract_index_ivf(self.cpu.index) is not None:
            return None  # IVF lists keep no id → vector map
        out = {}
        for item_id in ids:
            try:
                out[int(item_id)] = self.cpu.reconstruct(int(item_id))
            except RuntimeError:  # not in this index
                pass
        return out


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

    @property
    def device(self) -> str:
        return "gpu" if any(part.device == "gpu" for part in self.parts.values()) else "cpu"

    def only(self, names: Sequence[str]) -> "Partitioned":
        return Partitioned({n: p for n, p in self.parts.items() if n in names}, self.state)

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row over all parts; -1 ids pad rows with fewer than k hits."""
        queries = np.atleast_2d(queries)
        found = [part.search(queries, k, allowed_ids) for part in self.parts.values() if part.ntotal]
        if not found:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        scores = np.concatenate([s for s, _ in found], axis=1)
        ids = np.concatenate([i for _, i in found], axis=1)
        scores = np.where(ids >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :max(1, int(k))]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

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

    def reconstruct(self, item_id: int) -> np.ndarray:
        for part in self.parts.values():
            try:
                return part.reconstruct(item_id)
            except RuntimeError:
                continue
        raise KeyError(item_id)


@dataclass
class SyncReport:
    action: str  # "fresh", "caught-up" or "rebuilt"
    added: int = 0
    removed: int = 0


def check(index: FaissIndex | None, store: Store, want: IndexState) -> list[str]:
    """Ways the cached index disagrees with SQL and the wanted layout; empty when it is exact."""
    if index is None:
        return ["vector index file is missing or unreadable"]
    problems = []
    if not index.state.same_layout(want):
        problems.append(f"index built as {index.state.layout()}, wanted {want.layout()}")
    generation = store.generation()
    if index.state.generation != generation:
        problems.append(f"index reflects generation {index.state.generation}, database is at {generation}")
    index_ids, sql_ids = index.ids(), store.vector_ids(want.space)
    if len(np.unique(index_ids)) != len(index_ids):
        problems.append("index holds duplicate ids")
    if len(index_ids) != len(sql_ids):
        problems.append(f"index holds {len(index_ids)} vectors, database {len(sql_ids)}")
    elif not np.array_equal(np.sort(index_ids), np.sort(sql_ids)):
        problems.append("index ids differ from database ids")
    return problems


def sync(index: FaissIndex | None, store: Store, want: IndexState) -> tuple[FaissIndex, SyncReport]:
    """Bring the index to what SQL holds: nothing to do, catch up on changes, or rebuild from scratch."""
    generation = store.generation()  # read first: anything committed later is re-applied next time
    usable = index is not None and index.state.generation <= generation and index.state.same_layout(want)
    if usable and not check(index, store, want):
        return index, SyncReport("fresh")
    if usable:
        try:
            report = _catch_up(index, store, index.state.generation)
            index.state.generation = generation
            return index, report
        except RuntimeError:  # e.g. an index type without remove_ids: rebuild instead
            pass
    return _rebuild(store, replace(want, generation=generation))


def _catch_up(index: FaissIndex, store: Store, since: int) -> SyncReport:
    """Apply what changed since generation ``since``. Its reads are separate queries while another process
    may commit, so the result is checked against what these reads saw (SQL's ids, plus the changed ones),
    never against a later count: a commit in between is newer than the generation read first and is applied
    by the next sync, it is no reason to rebuild the whole index."""
    weights, space = index.state.weight_map(), index.state.space
    sql_ids = store.vector_ids(space)
    index_ids = index.ids()
    changed = list(store.iter_vectors(weights, since_generation=since, space=space))
    changed_ids = np.concatenate([ids for ids, _ in changed]) if changed else np.zeros(0, np.int64)
    stale = np.union1d(np.setdiff1d(index_ids, sql_ids), np.intersect1d(changed_ids, index_ids))
    index.remove(stale)
    for ids, vectors in changed:
        index.add(ids, vectors)
    missing = np.setdiff1d(np.setdiff1d(sql_ids, index_ids), changed_ids)
    for ids, vectors in store.iter_vectors(weights, ids=missing, space=space) if len(missing) else ():
        index.add(ids, vectors)
    now = index.ids()
    if not len(np.unique(now)) == len(now) == len(np.union1d(sql_ids, changed_ids)):
        raise RuntimeError("count mismatch after catch-up")
    return SyncReport("caught-up", added=len(changed_ids) + len(missing), removed=len(stale))


def _rebuild(store: Store, state: IndexState) -> tuple[FaissIndex, SyncReport]:
    index = FaissIndex(state)
    chunks = store.iter_vectors(state.weight_map(), space=state.space)
    if not index.cpu.is_trained:  # IVF-style indexes train on everything SQL holds
        chunks = list(chunks)
        if chunks:
            sample = np.concatenate([v for _, v in chunks])
            try:
                index.cpu.train(sample)
            except RuntimeError as exc:
                raise MMSearchError(f"index_type {state.factory!r} cannot be trained on {len(sample)} vectors "
                                    f"({_faiss_reason(exc)}); use Flat until the collection is larger") from None
    added = 0
    for ids, vectors in chunks:
        if vectors.shape[1] != state.dim:
            raise MMSearchError(f"database holds {vectors.shape[1]}-d vectors, the model makes {state.dim}-d; "
                                f"run index --reembed")
        index.add(ids, vectors)
        added += len(ids)
    return index, SyncReport("rebuilt", added=added)


def _faiss_reason(exc: RuntimeError) -> str:
    """faiss prefixes its messages with a C++ signature and source location; keep the reason."""
    text = first_line(exc, 10_000)
    return text.split(": ", 1)[1] if text.startswith("Error in ") and ": " in text else text
