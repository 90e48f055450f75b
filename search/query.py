"""Queries over the vector index, joined with item metadata from SQL: single vectors, likes, and
multi-part requests with early or late fusion, filters inside the search, exclusion and de-duplication."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mmsearch.errors import MMSearchError

from . import fusion, hybrid
from .matches import describe_match, explain
from .request import Filters, QueryPart, SearchRequest
from .store import Store
from .tables import CAPTION, FUSED, Item, slot_of
from .partitioned import Partitioned
from .vector_store import VectorStore

LATE_DEPTH = 100  # each positive part's list in late fusion reaches at least this deep


@dataclass
class Hit:
    id: int
    score: float
    item: Item
    parts: list[dict] | None = None
    match: dict | None = None  # the item's vector that matched best: kind, score and where it lies


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
    best: dict[int, int] = field(default_factory=dict)  # item id → its best-matching vector's id

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
        found = self._search(np.asarray(vector, np.float32).reshape(-1), k, allowed, self._main(filters))
        pairs = [(i, s) for i, s, _ in found]
        if first is not None:
            # Exact duplicates tie with the item itself; the item asked about leads.
            pairs.sort(key=lambda p: (p[0] != first, -p[1]))
        return self._hits(pairs, {i: (s, v) for i, s, v in found})

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

    def _fused(self, ids: list[int], own: dict | None = None) -> dict[int, np.ndarray]:
        """Items' one vector each (content fused with caption: store.item_vectors), from ``own`` (their
        store.part_vectors, when already read) or SQL."""
        return self.store.item_vectors(ids, self.index.state.weight_map(), own)

    def _main(self, filters: Filters) -> Partitioned:
        """The whole index, less the parts a modality filter leaves out."""
        return self.index.only(filters.modalities) if filters.modalities else self.index

    def _search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None, index: Partitioned | VectorStore
                ) -> list[tuple[int, float, int]]:
        """The top-k items as (item id, score, id of its best vector): an item scores its best vector."""
        if index.ntotal == 0 or (allowed is not None and len(allowed) == 0):
            return []
        scores, ids, vectors = index.search(vector, k, allowed)
        return [(int(i), float(s), int(v)) for i, s, v in zip(ids[0], scores[0], vectors[0]) if i >= 0]

    def _hits(self, pairs: list[tuple[int, float]], matched: dict[int, tuple[float, int]]) -> list[Hit]:
        """Hits with their items from SQL and, from ``matched`` (item id → score, vector id), what matched."""
        items = self.store.items_by_id(i for i, _ in pairs)
        hits = [Hit(i, s, items[i]) for i, s in pairs if i in items]
        located = self.store.part_vectors([hit.id for hit in hits if hit.id in matched], data=False)
        for hit in hits:
            if hit.id in matched and matched[hit.id][1] < 0:
                hit.match = {"kind": "lexical", "score": matched[hit.id][0]}
            elif hit.id in matched:
                score, vector_id = matched[hit.id]
                row = next((r for r in located.get(hit.id, ()) if r.slot == slot_of(vector_id)), None)
                hit.match = describe_match(row, score, hit.item) if row is not None else None
        return hits

    # --- multi-part requests ------------------------------------------------------------------------
    def search(self, request: SearchRequest, embed: Callable[[QueryPart], np.ndarray]) -> SearchResponse:
        started = time.perf_counter()
        allowed = self.store.filter_ids(request.filters) if request.filters.active else None
        excluded = self._excluded(request)
        want = request.offset + request.k
        depth = want + len(excluded) + (want if request.dedupe is not None else 0) + 1  # +1: is there more?
        # the words are read while the query is embedded and the vectors searched
        words = hybrid.start(self.store, request, max(depth, LATE_DEPTH), allowed) if request.hybrid else dict
        vectors = [self.item_vector(p.value) if p.kind == "item" else np.asarray(embed(p), np.float32).reshape(-1)
                   for p in request.parts]
        weights = [p.weight for p in request.parts]
        lists: list[RankedList] = []
        used = FUSED
        if request.fusion == "early":
            found = self._search(fusion.early(vectors, weights), max(depth, LATE_DEPTH) if request.hybrid else depth,
                                 allowed, self._main(request.filters))
            ranked = [(i, s) for i, s, _ in found]
            matched = {i: (s, v) for i, s, v in found}
        else:
            used = request.index or "modality"  # late fusion ranks within each modality unless asked
            lists = self._late_lists(request, vectors, max(depth, LATE_DEPTH), allowed, used)
            ranked = self._fuse(lists, request)
            matched = self._matched(lists)
        lexical = words()
        if request.hybrid:
            ranked = hybrid.fuse(request, ranked, lexical)
            for found_words in lexical.values():
                for item_id, (_, score) in found_words.items():
                    matched.setdefault(item_id, (score, -1))  # found by its words alone
        likes = [p.value for p in request.parts if p.kind == "item"]
        if len(request.parts) == 1 and likes and not request.exclude_self:
            ranked.sort(key=lambda p: (p[0] != likes[0], -p[1]))
        ranked = [p for p in ranked if p[0] not in excluded]
        if request.dedupe is not None:
            ranked = self._dedupe(ranked, request.dedupe)
        page = ranked[request.offset:want]
        hits = self._hits(page, matched)
        if request.explain:
            own = self.store.part_vectors([h.id for h in hits])
            explain(hits, request.parts, vectors, lists, own, self._fused([h.id for h in hits], own))
            for hit in hits:
                for n, entry in enumerate(hit.parts):
                    if n in lexical:
                        rank, score = lexical[n].get(hit.id, (None, None))
                        entry["lexical"] = {"rank": rank, "score": score}
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

    def _spaces(self, used: str, filters: Filters) -> list[tuple[str, Partitioned | VectorStore]]:
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
                    lists.append(RankedList(n, space, part.weight, {i: s for i, s, _ in hits},
                                            {i: r for r, (i, _, _) in enumerate(hits, start=1)},
                                            np.array([s for _, s, _ in hits]), {i: v for i, _, v in hits}))
        candidates = sorted({i for ranked in lists for i in ranked.ranks})
        for n, (part, vector) in enumerate(zip(request.parts, vectors)):
            if part.weight > 0 or not candidates:
                continue
            for space, index in spaces:
                found = self._exact(space, index, vector, candidates, allowed)
                if found is not None:
                    lists.append(RankedList(n, space, part.weight, *found))
        return lists

    def _exact(self, space: str, index: Partitioned | VectorStore, vector: np.ndarray, candidates: list[int],
               allowed: np.ndarray | None):
        """(scores, ranks) of the candidates in one space's full ranking for this vector, and the scores of
        everything down to the lowest candidate (the list a negative part is normalised over)."""
        mine = index.vectors(candidates)
        if mine is None:  # an index that cannot give vectors back: SQL's, the items of this space only
            held = set(index.item_ids().tolist())
            mine = {i: np.stack([r.vector for r in rows]) for i, rows in self.store.part_vectors(candidates).items()
                    if i in held}
        if not mine:
            return None
        scores = np.array([float((matrix @ vector).max()) for matrix in mine.values()])  # each item's best vector
        ahead = np.sort(index.scores_above(vector, float(scores.min()) - 1e-5, allowed))
        # rank = 1 + how many score higher; the margin keeps an item from counting its own score
        ranks = 1 + len(ahead) - np.searchsorted(ahead, scores + 1e-6, side="right")
        ids = list(mine)
        spread = ahead if len(ahead) >= len(scores) else np.concatenate([ahead, scores])  # IVF may miss some
        return dict(zip(ids, scores.tolist())), dict(zip(ids, ranks.tolist())), spread

    @staticmethod
    def _matched(lists: list[RankedList]) -> dict[int, tuple[float, int]]:
        """Each item's best match over the positive parts' lists: (score, vector id)."""
        out: dict[int, tuple[float, int]] = {}
        for ranked_list in lists:
            if ranked_list.weight > 0:
                for item_id, vector_id in ranked_list.best.items():
                    score = ranked_list.scores[item_id]
                    if item_id not in out or score > out[item_id][0]:
                        out[item_id] = (score, vector_id)
        return out

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
        # Near duplicates: item vectors at least ``how`` alike, and every content, passage and segment vector
        # of each has one at least ``how`` alike in the other, so two long notes that share an opening but
        # end differently are two items, not one.
        ids = [item_id for item_id, _ in ranked]
        own = self.store.part_vectors(ids)  # one read for all, not one per item
        fused = self._fused(ids, own)
        bodies = {i: np.stack([r.vector for r in rows if r.kind != CAPTION]) for i, rows in own.items()}
        held: list[int] = []
        for item_id, score in ranked:
            vector = fused.get(item_id)
            if vector is None or not any(float(vector @ fused[other]) >= how and
                                         fusion.coverage(bodies[item_id], bodies[other]) >= how for other in held):
                kept.append((item_id, score))
                if vector is not None:
                    held.append(item_id)
        return kept
