"""FAISS vector index of every stored vector (content, caption, passages, segments), keyed by vector id
(search.tables.vector_id: the item's id and the vector's slot), searched for items: an item scores its
best-matching vector's score, and a search returns k distinct items. A cache of SQL (search.index_sync).

The index file sits beside a small JSON sidecar naming the SQL generation it reflects, the
encoder that produced its vectors and its FAISS factory string.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from mmsearch.files import atomic_write
from mmsearch.errors import MMSearchError, first_line

from .index_types import IndexState
from .tables import item_of
from .vector_store import VectorSearch, VectorStore, best_per_item


class FaissIndex(VectorStore):
    """Inner-product index over L2-normalised vectors, ids = vector ids. Searches on a GPU when faiss has one."""

    def __init__(self, state: IndexState, index: faiss.Index | None = None):
        super().__init__(state)
        self.cpu = index if index is not None else self._empty(state)
        self._ivf, self._ivf_of = None, None  # the IVF inside, and the index it was extracted from
        self.mapped = False  # codes memory-mapped from the file (load); copied into memory on the first change
        self._gpu: faiss.Index | None = None
        self._gpu_stale = True

    @staticmethod
    def _empty(state: IndexState) -> faiss.Index:
        """An IVF index keeps our ids in its lists (with a hash map from id to list entry, for reconstruct and
        removal); any other type is wrapped in an id map. Never IVF under an id map: IndexIDMap2 expects the
        inner index to renumber its vectors after a removal, as only a flat index does."""
        try:
            inner = faiss.index_factory(state.dim, state.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise MMSearchError(f"invalid index_type {state.factory!r}: {faiss_reason(exc)}") from None
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is None:
            return faiss.IndexIDMap2(inner)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        return inner

    @property
    def inner(self) -> faiss.Index:
        """The index holding the codes (under the id map, when there is one)."""
        return self.cpu.index if isinstance(self.cpu, faiss.IndexIDMap2) else self.cpu

    @property
    def ivf(self) -> faiss.IndexIVF | None:
        if self._ivf_of is not self.cpu:  # looked up once per index object (a SWIG call on every search)
            self._ivf, self._ivf_of = faiss.try_extract_index_ivf(self.cpu), self.cpu
        return self._ivf

    # --- persistence ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, mapped: bool = False) -> "FaissIndex | None":
        """The cached index, or None when there is none or it cannot be read (it is only a cache). ``mapped``:
        its codes memory-mapped from the file (faiss IO_FLAG_MMAP_IFC: flat, scalar-quantised and IVF codes),
        read on demand and shared through the page cache by every process that opens it."""
        sidecar = cls.files(path)[1]
        try:
            state = IndexState(**json.loads(sidecar.read_text()))
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        except (OSError, ValueError, TypeError, RuntimeError):
            return None
        if index.d != state.dim:
            return None
        wrapped = isinstance(index, faiss.IndexIDMap2)
        if wrapped == (faiss.try_extract_index_ivf(index) is not None):  # an IVF under an id map: see _empty
            return None
        loaded = cls(state, index)
        loaded.mapped = mapped
        return loaded

    @staticmethod
    def files(path: Path) -> tuple[Path, Path]:
        """The index file at ``path`` and its sidecar."""
        return path, path.with_suffix(path.suffix + ".json")

    def save(self, path: Path) -> None:
        """Write index then sidecar, each atomically; a crash between leaves a sidecar that under-claims,
        which the next sync repairs by re-applying changes (idempotent)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: faiss.write_index(self.cpu, tmp))
        atomic_write(self.files(path)[1], lambda tmp: Path(tmp).write_text(json.dumps(self.state.__dict__)))

    # --- contents ---------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    def _read_ids(self) -> np.ndarray:
        ivf = self.ivf
        if ivf is None:
            return faiss.vector_to_array(self.cpu.id_map).astype(np.int64)
        lists = ivf.invlists
        chunks = [faiss.rev_swig_ptr(lists.get_ids(n), lists.list_size(n)).copy()
                  for n in range(ivf.nlist) if lists.list_size(n)]
        return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)

    @property
    def is_trained(self) -> bool:
        return bool(self.cpu.is_trained)

    def train(self, sample: np.ndarray) -> None:
        self.cpu.train(sample)

    def memory_bytes(self) -> int:
        """Each vector's code (4 bytes a dimension for Flat, 2 for SQfp16, 1 for SQ8) and its 8-byte id
        (IndexIDMap2's id → position map comes on top)."""
        return self.ntotal * (self.inner.sa_code_size() + 8)

    @property
    def device(self) -> str:
        return "gpu" if faiss.get_num_gpus() > 0 and self._gpu is not None else "cpu"

    def _own(self) -> None:
        """Copy a mapped index into memory before it changes (faiss aborts the process when one grows)."""
        if self.mapped:
            self.cpu = faiss.deserialize_index(faiss.serialize_index(self.cpu))
            self.mapped = False

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._own()
        if not self.cpu.is_trained:  # trained only by index_sync, on a sample of the whole collection
            raise RuntimeError("the index is not trained")
        self.cpu.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))
        self._gpu_stale = True
        self._changed()

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._own()
            ids = np.ascontiguousarray(ids, np.int64)  # an IVF's hash map removes only by an id array
            selector = faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)) if self.ivf is not None \
                else faiss.IDSelectorBatch(ids)
            self.cpu.remove_ids(selector)
            self._gpu_stale = True
            self._changed()

    def reconstruct(self, vector_id: int) -> np.ndarray:
        return self.cpu.reconstruct(int(vector_id))

    # --- search -----------------------------------------------------------------------------------
    def _searcher(self) -> faiss.Index:
        if faiss.get_num_gpus() == 0:
            return self.cpu
        if self._gpu_stale:
            try:
                self._gpu = faiss.index_cpu_to_all_gpus(self.cpu)
                if self.ivf is not None:
                    faiss.GpuParameterSpace().set_index_parameter(self._gpu, "nprobe", self.nprobe)
            except (RuntimeError, AttributeError):  # types without a GPU version keep searching on the CPU
                self._gpu = None
            self._gpu_stale = False
        return self._gpu or self.cpu

    def _vector_search(self, allowed_items: np.ndarray | None, allowed: np.ndarray | None) -> VectorSearch:
        return lambda queries, k: self.search_vectors(queries, k, allowed)

    def search_vectors(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vector ids) per query row over single vectors (allowed: vector ids). With a filter,
        an IVF index scores the allowed vectors exactly when they are fewer than a probe would scan, and
        probes every list when its nprobe lists held fewer than k of them: a filter never loses hits."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        k = max(1, min(int(k), self.ntotal or 1))
        ivf = self.ivf
        if allowed is None:
            return self.batcher(queries, k) if self.batcher is not None else self.plain_search(queries, k)
        if ivf is not None and len(allowed) <= self.ntotal * self.nprobe / ivf.nlist:
            return self._score(queries, k, np.asarray(allowed, np.int64))
        params, _selector = self._params(allowed)
        scores, ids = self.cpu.search(queries, k, params=params)
        if ivf is not None and params.nprobe < ivf.nlist and ((ids >= 0).sum(axis=1) < min(k, len(allowed))).any():
            params.nprobe = ivf.nlist
            scores, ids = self.cpu.search(queries, k, params=params)
        return scores, ids

    def plain_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One unfiltered FAISS call (the server batches concurrent ones: search.batching)."""
        ivf = self.ivf
        searcher = self._searcher()
        if searcher is not self.cpu:  # a GPU copy (flat or IVF, its nprobe set when copied)
            try:
                return searcher.search(queries, k)
            except RuntimeError:  # e.g. k beyond what the GPU kernels select: the CPU answers
                pass
        if ivf is None:
            return self.cpu.search(queries, k)
        return self.cpu.search(queries, k, params=faiss.SearchParametersIVF(nprobe=min(self.nprobe, ivf.nlist)))

    def _score(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every allowed vector scored against each query (their codes decoded): the exact top-k of them."""
        out = (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64))
        if len(allowed) == 0:
            return out
        scores = queries @ self.cpu.reconstruct_batch(allowed).T
        take = min(k, len(allowed))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :take]
        out[0][:, :take], out[1][:, :take] = np.take_along_axis(scores, top, 1), allowed[top]
        return out

    def _params(self, allowed_ids: np.ndarray | None) -> tuple[faiss.SearchParameters, faiss.IDSelector | None]:
        """IVF lists to probe, and an id selector that filters inside the scan (so a selective filter still
        yields k hits when k exist). The selector comes back too: faiss keeps only a raw pointer to it, so
        the caller holds it until the search is done."""
        ivf = self.ivf
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
        ids = self.vector_ids_of(np.asarray(list(items), np.int64))
        try:
            rows = self.cpu.reconstruct_batch(ids) if len(ids) else np.zeros((0, self.state.dim), np.float32)
        except RuntimeError:  # a type that keeps no id → vector map
            return None
        owners = item_of(ids)
        return {int(item): rows[owners == item] for item in np.unique(owners)}


def faiss_reason(exc: RuntimeError) -> str:
    """faiss prefixes its messages with a C++ signature and source location; keep the reason."""
    text = first_line(exc, 10_000)
    return text.split(": ", 1)[1] if text.startswith("Error in ") and ": " in text else text
