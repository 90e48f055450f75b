"""Queries over the vector index, joined with item metadata from SQL: single vectors, likes, and
multi-part requests with early or late fusion, filters inside the search, exclusion and de-duplication."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mmsearch.errors import MMSearchError

from . import fusion
from .request import Filters, QueryPart, SearchRequest
from .store import Item, Store
from .vector_index import FaissIndex

LATE_DEPTH = 100  # each part's list in late fusion reaches at least this deep


@dataclass
class Hit:
    id: int
    score: float
    item: Item
    parts: list[dict] | None = None

    def as_dict(self) -> dict:
        out = {"id": self.id, "path": self.item.path, "modality": self.item.modality, "score": self.score}
        if self.parts is not None:
            out["parts"] = self.parts
        return out


@dataclass
class SearchResponse:
    results: list[Hit]
    took_ms: float
    next_offset: int | None = None
    parts: list[dict] = field(default_factory=list)


class Searcher:
    def __init__(self, store: Store, index: FaissIndex):
        self.store = store
        self.index = index

    # --- single vector ------------------------------------------------------------------------------
    def by_vector(self, vector: np.ndarray, k: int, modalities: Sequence[str] | None = None,
                  first: int | None = None) -> list[Hit]:
        """Top-k items by inner product; ``first`` (an item id) is put at the top when it is a hit."""
        if k <= 0:
            raise MMSearchError("k must be a positive integer")
        filters = Filters(modalities=list(modalities) if modalities else None)
        allowed = self.store.filter_ids(filters) if filters.active else None
        pairs = self._search(np.asarray(vector, np.float32).reshape(-1), k, allowed)
        if first is not None:
            # Exact duplicates tie with the item itself; the item asked about leads.
            pairs.sort(key=lambda p: (p[0] != first, -p[1]))
        return self._hits(pairs)

    def like(self, item_id: int, k: int, modalities: Sequence[str] | None = None) -> list[Hit]:
        return self.by_vector(self.item_vector(item_id), k, modalities, first=item_id)

    def item_vector(self, item_id: int) -> np.ndarray:
        item = self.store.get_item(item_id)
        if item is None:
            raise MMSearchError(f"no item with id {item_id}")
        vector = self._vector(item_id)
        if vector is None:
            raise MMSearchError(f"item {item_id} ({item.path}) has no vector: its status is {item.status}"
                                + (f" ({item.error})" if item.error else ""))
        return vector

    def _vector(self, item_id: int) -> np.ndarray | None:
        """The item's vector in the main index: fused with its caption when it has one."""
        return self.store.index_vector(item_id, self.index.state.weight_map())

    def _search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if self.index.ntotal == 0 or (allowed is not None and len(allowed) == 0):
            return []
        scores, ids = self.index.search(vector, k, allowed)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _hits(self, pairs: list[tuple[int, float]]) -> list[Hit]:
        items = self.store.items_by_id(i for i, _ in pairs)
        return [Hit(i, s, items[i]) for i, s in pairs if i in items]

    # --- multi-part requests ------------------------------------------------------------------------
    def search(self, request: SearchRequest, embed: Callable[[QueryPart], np.ndarray]) -> SearchResponse:
        started = time.perf_counter()
        vectors = [self.item_vector(p.value) if p.kind == "item" else np.asarray(embed(p), np.float32).reshape(-1)
                   for p in request.parts]
        weights = [p.weight for p in request.parts]
        allowed = self.store.filter_ids(request.filters) if request.filters.active else None
        excluded = self._excluded(request)
        want = request.offset + request.k
        depth = want + len(excluded) + (want if request.dedupe is not None else 0) + 1  # +1: is there more?
        per_part: list[list[tuple[int, float]]] = []
        if request.fusion == "early":
            ranked = self._search(fusion.early(vectors, weights), depth, allowed)
        else:
            per_part = [self._search(v, max(depth, LATE_DEPTH), allowed) for v in vectors]
            fused = (fusion.rrf([[i for i, _ in hits] for hits in per_part], weights, request.rrf_k)
                     if request.fusion == "rrf" else fusion.relative(per_part, weights))
            ranked = sorted(fused.items(), key=lambda p: (-p[1], p[0]))
        likes = [p.value for p in request.parts if p.kind == "item"]
        if len(request.parts) == 1 and likes and not request.exclude_self:
            ranked.sort(key=lambda p: (p[0] != likes[0], -p[1]))
        ranked = [p for p in ranked if p[0] not in excluded]
        if request.dedupe is not None:
            ranked = self._dedupe(ranked, request.dedupe)
        page = ranked[request.offset:want]
        hits = self._hits(page)
        if request.explain:
            self._explain(hits, request.parts, vectors, per_part)
        next_offset = want if len(ranked) > want else None
        took = (time.perf_counter() - started) * 1000
        described = [{"label": p.label, "kind": p.kind, "weight": p.weight} for p in request.parts]
        return SearchResponse(hits, took, next_offset, described)

    def _excluded(self, request: SearchRequest) -> set[int]:
        if not request.exclude_self:
            return set()
        ids = {p.value for p in request.parts if p.kind == "item"}
        hashes = [item.content_hash for item in self.store.items_by_id(ids).values() if item.content_hash]
        return ids | set(self.store.ids_with_hashes(hashes).tolist()) if hashes else ids

    def _dedupe(self, ranked: list[tuple[int, float]], how: str | float) -> list[tuple[int, float]]:
        kept: list[tuple[int, float]] = []
        if how == "hash":
            items = self.store.items_by_id(i for i, _ in ranked)
            seen: set[str] = set()
            for item_id, score in ranked:
                digest = items[item_id].content_hash if item_id in items else None
                if digest is None or digest not in seen:
                    kept.append((item_id, score))
                    seen.add(digest)
            return kept
        vectors: list[np.ndarray] = []
        for item_id, score in ranked:
            vector = self._vector(item_id)
            if vector is None or all(float(vector @ other) < how for other in vectors):
                kept.append((item_id, score))
                if vector is not None:
                    vectors.append(vector)
        return kept

    def _explain(self, hits: list[Hit], parts: list[QueryPart], vectors: list[np.ndarray],
                 per_part: list[list[tuple[int, float]]]) -> None:
        """Each result's similarity to each part, and its rank in that part's own list (late fusion)."""
        ranks = [{item_id: rank for rank, (item_id, _) in enumerate(hits_, start=1)} for hits_ in per_part]
        for hit in hits:
            vector = self._vector(hit.id)
            hit.parts = []
            for n, (part, query) in enumerate(zip(parts, vectors)):
                entry = {"label": part.label, "weight": part.weight,
                         "score": float(vector @ query) if vector is not None else None}
                if ranks:
                    entry["rank"] = ranks[n].get(hit.id)
                hit.parts.append(entry)
