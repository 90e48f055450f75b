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
from .store import Store
from .tables import FUSED, Item
from .vector_index import FaissIndex, Partitioned

LATE_DEPTH = 100  # each positive part's list in late fusion reaches at least this deep


@dataclass
class Hit:
    id: int
    score: float
    item: Item
    parts: list[dict] | None = None


@dataclass
class SearchResponse:
    results: list[Hit]
    took_ms: float
    next_offset: int | None = None
    parts: list[dict] = field(default_factory=list)
    index: str = FUSED  # where the lists came from: the whole index ("fused"), or each modality's part


@dataclass
class RankedList:
    """One late-fusion list: a query part searched in one space, known at the items that matter."""

    part: int
    space: str
    weight: float
    scores: dict[int, float]
    ranks: dict[int, int]
    spread: np.ndarray  # the list's scores, whose range or distribution relative and dbsf normalise by

    def fused_range(self, how: str) -> tuple[float, float]:
        return fusion.min_max(self.spread) if how == "relative" else fusion.three_sigma(self.spread)


class Searcher:
    def __init__(self, store: Store, index: Partitioned):
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
        pairs = self._search(np.asarray(vector, np.float32).reshape(-1), k, allowed, self._main(filters))
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
        vector = self._fused([item_id]).get(item_id)
        if vector is None:
            raise MMSearchError(f"item {item_id} ({item.path}) has no vector: its status is {item.status}"
                                + (f" ({item.error})" if item.error else ""))
        return vector

    def _fused(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Items' vectors in the main index (fused with their captions), exactly as SQL holds them."""
        return self.store.space_vectors(FUSED, ids, self.index.state.weight_map())

    def _main(self, filters: Filters) -> Partitioned:
        """The whole index, less the parts a modality filter leaves out."""
        return self.index.only(filters.modalities) if filters.modalities else self.index

    def _search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None, index: Partitioned | FaissIndex
                ) -> list[tuple[int, float]]:
        if index.ntotal == 0 or (allowed is not None and len(allowed) == 0):
            return []
        scores, ids = index.search(vector, k, allowed)
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
        lists: list[RankedList] = []
        used = FUSED
        if request.fusion == "early":
            ranked = self._search(fusion.early(vectors, weights), depth, allowed, self._main(request.filters))
        else:
            used = request.index or "modality"  # late fusion ranks within each modality unless asked
            lists = self._late_lists(request, vectors, max(depth, LATE_DEPTH), allowed, used)
            ranked = self._fuse(lists, request)
        likes = [p.value for p in request.parts if p.kind == "item"]
        if len(request.parts) == 1 and likes and not request.exclude_self:
            ranked.sort(key=lambda p: (p[0] != likes[0], -p[1]))
        ranked = [p for p in ranked if p[0] not in excluded]
        if request.dedupe is not None:
            ranked = self._dedupe(ranked, request.dedupe)
        page = ranked[request.offset:want]
        hits = self._hits(page)
        if request.explain:
            self._explain(hits, request.parts, vectors, lists)
        next_offset = want if len(ranked) > want else None
        took = (time.perf_counter() - started) * 1000
        described = [{"label": p.label, "kind": p.kind, "weight": p.weight} for p in request.parts]
        return SearchResponse(hits, took, next_offset, described, used)

    # --- late fusion --------------------------------------------------------------------------------
    @staticmethod
    def _fuse(lists: list[RankedList], request: SearchRequest) -> list[tuple[int, float]]:
        weights = [l.weight for l in lists]
        if request.fusion == "rrf":
            fused = fusion.rrf_ranks([l.ranks for l in lists], weights, request.rrf_k)
        else:
            fused = fusion.scaled([(l.scores, *l.fused_range(request.fusion)) for l in lists], weights,
                                  flat=1.0 if request.fusion == "relative" else 0.5)
        best: dict[int, float] = {}  # ties (each modality's first is 1/(k+1)) go to the closer match
        for ranked_list in lists:
            if ranked_list.weight > 0:
                for item_id, score in ranked_list.scores.items():
                    best[item_id] = max(score, best.get(item_id, -np.inf))
        return sorted(fused.items(), key=lambda p: (-p[1], -best.get(p[0], -np.inf), p[0]))

    def _spaces(self, used: str, filters: Filters) -> list[tuple[str, Partitioned | FaissIndex]]:
        """What late fusion ranks in: the whole index at once, or each modality's part on its own."""
        main = self._main(filters)
        return [(FUSED, main)] if used == FUSED else list(main.parts.items())

    def _late_lists(self, request: SearchRequest, vectors: list[np.ndarray], depth: int,
                    allowed: np.ndarray | None, used: str) -> list[RankedList]:
        """Positive parts: each space's top ``depth``. Negative parts: the exact global rank and score of
        every candidate the positive parts found, so a penalty never stops at a list's depth."""
        spaces = [(s, index) for s, index in self._spaces(used, request.filters) if index.ntotal]
        lists: list[RankedList] = []
        for n, (part, vector) in enumerate(zip(request.parts, vectors)):
            if part.weight < 0:
                continue
            for space, index in spaces:
                hits = self._search(vector, depth, allowed, index)
                if hits:
                    lists.append(RankedList(n, space, part.weight, dict(hits),
                                            {i: r for r, (i, _) in enumerate(hits, start=1)},
                                            np.array([s for _, s in hits])))
        candidates = sorted({i for ranked in lists for i in ranked.ranks})
        for n, (part, vector) in enumerate(zip(request.parts, vectors)):
            if part.weight > 0 or not candidates:
                continue
            for space, index in spaces:
                found = self._exact(space, index, vector, candidates, allowed)
                if found is not None:
                    lists.append(RankedList(n, space, part.weight, *found))
        return lists

    def _exact(self, space: str, index: Partitioned | FaissIndex, vector: np.ndarray, candidates: list[int],
               allowed: np.ndarray | None):
        """(scores, ranks) of the candidates in one space's full ranking for this vector, and the scores of
        everything down to the lowest candidate (the list a negative part is normalised over)."""
        mine = index.vectors(candidates)
        if mine is None:
            mine = self.store.space_vectors(space, candidates, self.index.state.weight_map())
        if not mine:
            return None
        scores = np.stack(list(mine.values())) @ vector
        ahead = np.sort(index.scores_above(vector, float(scores.min()) - 1e-5, allowed))
        # rank = 1 + how many score higher; the margin keeps an item from counting its own score
        ranks = 1 + len(ahead) - np.searchsorted(ahead, scores + 1e-6, side="right")
        ids = list(mine)
        spread = ahead if len(ahead) >= len(scores) else np.concatenate([ahead, scores])  # IVF may miss some
        return dict(zip(ids, scores.tolist())), dict(zip(ids, ranks.tolist())), spread

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
        fused = self._fused([item_id for item_id, _ in ranked])  # one query, not one per ranked item
        for item_id, score in ranked:
            vector = fused.get(item_id)
            if vector is None or all(float(vector @ other) < how for other in vectors):
                kept.append((item_id, score))
                if vector is not None:
                    vectors.append(vector)
        return kept

    def _explain(self, hits: list[Hit], parts: list[QueryPart], vectors: list[np.ndarray],
                 lists: list[RankedList]) -> None:
        """Each result's similarity to each part, with its own vectors' similarities (content, caption) so a
        caption match shows as one; for late fusion, its rank in that part's list (of its modality)."""
        ids = [hit.id for hit in hits]
        own = self.store.part_vectors(ids)
        fused = self._fused(ids)
        for hit in hits:
            vector = fused.get(hit.id)
            hit.parts = []
            for n, (part, query) in enumerate(zip(parts, vectors)):
                entry = {"label": part.label, "weight": part.weight,
                         "score": float(vector @ query) if vector is not None else None,
                         "vectors": {name: float(v @ query) for name, v in sorted(own.get(hit.id, {}).items())}}
                if lists:
                    entry["rank"] = next((l.ranks[hit.id] for l in lists if l.part == n and hit.id in l.ranks), None)
                hit.parts.append(entry)
