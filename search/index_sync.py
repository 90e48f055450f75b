"""Keeping a part of the vector index (a FAISS file or a Milvus collection: search.vector_store) the exact
cache of SQL: check it, catch it up on what changed since the generation it reflects, or rebuild it. Ids are
vector ids (search.tables.vector_id), changes come per item: an item with any newer vector has all its
vectors replaced."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from mmsearch.errors import MMSearchError

from .store import Store
from .tables import item_of
from .index_types import IndexState, training_size
from .vector_index import FaissIndex, faiss_reason
from .vector_store import VectorStore

NewStore = Callable[[IndexState], VectorStore]  # an empty part of this layout (FAISS in memory, a new collection)


@dataclass
class SyncReport:
    action: str  # "fresh", "caught-up" or "rebuilt"
    added: int = 0
    removed: int = 0


def check(index: VectorStore | None, store: Store, want: IndexState) -> list[str]:
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


def sync(index: VectorStore | None, store: Store, want: IndexState, new: NewStore = FaissIndex
         ) -> tuple[VectorStore, SyncReport]:
    """Bring the index to what SQL holds: nothing to do, catch up on changes, or rebuild from scratch
    (into ``new(state)``)."""
    generation = store.generation()  # read first: anything committed later is re-applied next time
    usable = index is not None and index.state.generation <= generation and index.state.same_layout(want)
    if usable and not check(index, store, want):
        return index, SyncReport("fresh")
    if usable:
        try:
            report = _catch_up(index, store, index.state.generation)
            index.state = replace(index.state, generation=generation, weights=want.weights)
            return index, report
        except RuntimeError:  # e.g. an index type without remove_ids: rebuild instead
            pass
    return _rebuild(store, replace(want, generation=generation), new)


def _catch_up(index: VectorStore, store: Store, since: int) -> SyncReport:
    """Apply what changed since generation ``since``. Its reads are separate queries while another process
    may commit, so the result is checked against what these reads saw (SQL's ids, plus the changed ones),
    never against a later count: a commit in between is newer than the generation read first and is applied
    by the next sync, it is no reason to rebuild the whole index."""
    space = index.state.space
    sql_ids = store.vector_ids(space)
    index_ids = index.ids().copy()
    changed = list(store.iter_vectors(since_generation=since, space=space))
    changed_ids = np.concatenate([ids for ids, _ in changed]) if changed else np.zeros(0, np.int64)
    changed_items = np.unique(item_of(changed_ids))
    stale = np.union1d(np.setdiff1d(index_ids, sql_ids), index_ids[np.isin(item_of(index_ids), changed_items)])
    index.remove(stale)
    for ids, vectors in changed:
        index.add(ids, vectors)
    missing = np.setdiff1d(np.setdiff1d(sql_ids, index_ids), changed_ids)
    added = len(changed_ids)
    if len(missing):
        for ids, vectors in store.iter_vectors(ids=np.unique(item_of(missing)), space=space):
            keep = np.isin(ids, missing)
            index.add(ids[keep], vectors[keep])
            added += int(keep.sum())
    now = index.ids()
    if not len(np.unique(now)) == len(now) == len(np.union1d(sql_ids, changed_ids)):
        raise RuntimeError("count mismatch after catch-up")
    return SyncReport("caught-up", added=added, removed=len(stale))


def _rebuild(store: Store, state: IndexState, new: NewStore) -> tuple[VectorStore, SyncReport]:
    index = new(state)
    if not index.is_trained:
        _train(index, store, state)
    added = 0
    for ids, vectors in store.iter_vectors(space=state.space):
        _check_dim(vectors, state)
        index.add(ids, vectors)
        added += len(ids)
    return index, SyncReport("rebuilt", added=added)


def _train(index: VectorStore, store: Store, state: IndexState) -> None:
    """Train on a uniform sample of every vector SQL holds in this space (index_types.training_size of
    them), drawn by vector and read by item, never the first rows alone: a collection indexed folder by
    folder keeps its last folder's vectors in the sample."""
    ids = store.vector_ids(state.space)
    size = training_size(state.factory, len(ids), state.dim)
    chosen = np.random.default_rng(len(ids)).choice(ids, size, replace=False) if size < len(ids) else ids
    chunks = store.iter_vectors(ids=np.unique(item_of(chosen)), space=state.space) if size < len(ids) \
        else store.iter_vectors(space=state.space)
    sample = [vectors[np.isin(vector_ids, chosen)] for vector_ids, vectors in chunks]
    if not sample:
        return  # nothing to train on yet: the first sync with vectors rebuilds (FaissIndex.add refuses)
    for vectors in sample:
        _check_dim(vectors, state)
    sample = np.concatenate(sample)
    try:
        index.train(sample)
    except RuntimeError as exc:
        raise MMSearchError(f"index_type {state.factory!r} cannot be trained on {len(sample)} vectors "
                            f"({faiss_reason(exc)}); use Flat until the collection is larger") from None


def _check_dim(vectors: np.ndarray, state: IndexState) -> None:
    if vectors.shape[1] != state.dim:
        raise MMSearchError(f"database holds {vectors.shape[1]}-d vectors, the model makes {state.dim}-d; "
                            f"run index --reembed")
