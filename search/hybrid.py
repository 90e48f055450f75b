"""Hybrid search: each positive text part's full-text ranking (BM25 on SQLite, ts_rank_cd on PostgreSQL),
read beside the vector search, fused with the vector ranking by weighted reciprocal rank fusion."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from .request import SearchRequest
from .schema import in_memory
from .store import Store

Lexical = dict[int, dict[int, tuple[int, float]]]  # query part → item id → (lexical rank, score)
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """One pool per process: a forked child inherits the parent's pool object but none of its threads."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="mmsearch-lexical"))
    return _pool[1]


def start(store: Store, request: SearchRequest, depth: int, allowed: np.ndarray | None
          ) -> Callable[[], Lexical]:
    """Starts the full-text reads of the request's positive text parts (each ``depth`` deep) and returns what
    waits for them. They run in a worker thread while the caller searches the vectors: SQLite, PostgreSQL's
    driver and FAISS each release the GIL, so with a core to spare the words cost the longer of the two
    searches, not their sum (at 100k items the read, after the vector search, cost a hybrid query ~0.5 ms)."""
    texts = [(n, p) for n, p in enumerate(request.parts) if p.kind == "text" and p.weight > 0]

    def read() -> Lexical:
        return {n: {item_id: (rank, score) for rank, (item_id, score)
                    in enumerate(store.lexical(p.words or p.value, depth, allowed), start=1)} for n, p in texts}

    if not texts:
        return dict
    if in_memory(store.engine):  # a worker thread's own connection would be another, empty database
        found = read()
        return lambda: found
    return _executor().submit(read).result


def fuse(request: SearchRequest, ranked: list[tuple[int, float]], lexical: Lexical) -> list[tuple[int, float]]:
    """The vector ranking fused by RRF with each positive text part's full-text ranking:
    alpha / (k + vector rank) + (1 − alpha) · Σ (wᵢ / Σw) / (k + lexical rankᵢ)."""
    total = sum(request.parts[n].weight for n in lexical)
    fused: dict[int, float] = {}
    for rank, (item_id, _) in enumerate(ranked, start=1):
        fused[item_id] = request.alpha / (request.rrf_k + rank)
    for n, found in lexical.items():
        share = (1 - request.alpha) * request.parts[n].weight / total
        for item_id, (rank, _) in found.items():
            fused[item_id] = fused.get(item_id, 0.0) + share / (request.rrf_k + rank)
    # Ties (the vector list's first and the word list's first both get alpha/(k+1) at alpha 0.5) go to
    # the item the words matched, then to the vector ranking's order: hybrid was asked for the words.
    order = {item_id: position for position, (item_id, _) in enumerate(ranked)}
    worded = {item_id for found in lexical.values() for item_id in found}
    return sorted(fused.items(), key=lambda p: (-round(p[1], 12), p[0] not in worded, order.get(p[0], len(order)),
                                                p[0]))
