"""One contract for every vector store (search.vector_store): a FAISS Flat part and a Milvus FLAT collection
(milvus-lite, in a file under tmp_path) are kept from SQL by index_sync and answer every search alike: an
item scores its best vector, k distinct items, filters inside the search, range search, vectors back. Then
a Library with vector_store milvus:vectors.db against the same data dir searched through FAISS."""
from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pytest

from mmsearch.errors import MMSearchError
from mmsearch.library import Library
from mmsearch.search.index_sync import check, sync
from mmsearch.search.index_types import IndexState
from mmsearch.search.milvus_index import FACTORY, MilvusIndex, collection, connect
from mmsearch.search.request import QueryPart, SearchRequest
from mmsearch.search.store import Store
from mmsearch.search.tables import CAPTION, CONTENT, OK, PASSAGE, Item, Vector, vector_bytes, vector_id
from mmsearch.search.vector_index import FaissIndex
from mmsearch.search.vector_store import VectorStore

DIM = 16
KEY = "test/enc"
WEIGHTS = '{"audio": 1.0, "image": 1.0, "text": 1.0}'


@dataclass
class Kind:
    """How a test makes, saves and reopens one kind of part."""
    factory: str
    new: Callable[[IndexState], VectorStore]
    save: Callable[[VectorStore], None]
    load: Callable[[], VectorStore | None]


def faiss_kind(tmp_path) -> Kind:
    path = tmp_path / "vectors.image.faiss"
    return Kind("Flat", FaissIndex, lambda index: index.save(path), lambda: FaissIndex.load(path))


def milvus_kind(tmp_path) -> Kind:
    client = connect(str(tmp_path / "vectors.db"))
    return Kind(FACTORY, lambda state: MilvusIndex.create(client, state, collection("test", "image")),
                lambda index: index.save(), lambda: MilvusIndex.load(client, "image", collection("test", "image")))


@pytest.fixture(params=["faiss", "milvus"])
def kind(request, tmp_path) -> Kind:
    return faiss_kind(tmp_path) if request.param == "faiss" else milvus_kind(tmp_path)


@pytest.fixture
def store(db_url):
    return Store(db_url)


def want(kind: Kind) -> IndexState:
    return IndexState(0, KEY, DIM, kind.factory, WEIGHTS, "image", "vector")


def unit(rng, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def put(store: Store, items: dict[int, np.ndarray]) -> None:
    """Items (images) with one vector a row: slot 0 content, 1 caption, 2… passages; an item put again has
    its vectors replaced, in one generation."""
    with store.session() as session:
        generation = store.bump_generation(session)
        for item_id, rows in items.items():
            session.merge(Item(id=item_id, path=f"/m/{item_id}.jpg", modality="image", size=1, mtime_ns=1,
                               status=OK, indexed_at=dt.datetime(2026, 1, 1), layout=2))
            session.flush()
            session.query(Vector).filter(Vector.item_id == item_id).delete()
            for slot, vector in enumerate(np.atleast_2d(rows)):
                session.add(Vector(item_id=item_id, slot=slot, kind=(CONTENT, CAPTION, PASSAGE)[min(slot, 2)],
                                   encoder=KEY, dim=DIM, data=vector_bytes(vector), generation=generation))


def populated(store: Store, seed: int = 0, n: int = 60) -> dict[int, np.ndarray]:
    """n items, every third with three vectors."""
    rng = np.random.default_rng(seed)
    items = {i: unit(rng, 3 if i % 3 == 0 else 1) for i in range(1, n + 1)}
    put(store, items)
    return items


def exact(items: dict[int, np.ndarray], query: np.ndarray, allowed=None) -> list[tuple[int, float]]:
    """Every item by its best vector's score, best first."""
    best = {i: float((rows @ query).max()) for i, rows in items.items() if allowed is None or i in allowed}
    return sorted(best.items(), key=lambda pair: -pair[1])


def test_rebuilt_fresh_and_caught_up_against_sql(store, kind):
    populated(store)
    index, report = sync(None, store, want(kind), kind.new)
    assert report.action == "rebuilt" and report.added == index.ntotal == 100
    assert check(index, store, want(kind)) == []
    kind.save(index)
    loaded = kind.load()
    assert loaded is not None and loaded.state.generation == store.generation()
    assert sync(loaded, store, want(kind), kind.new)[1].action == "fresh"

    rng = np.random.default_rng(9)
    changed = unit(rng, 2)
    put(store, {6: changed, 61: unit(rng, 1)})  # item 6: three vectors become two; 61 is new
    store.remove_ids([7])
    assert check(loaded, store, want(kind))
    caught, report = sync(loaded, store, want(kind), kind.new)
    assert report.action == "caught-up" and report.removed == 4  # item 7's vector and item 6's three
    assert check(caught, store, want(kind)) == []
    np.testing.assert_array_equal(np.sort(caught.ids()), np.sort(store.vector_ids("image")))
    np.testing.assert_allclose(caught.reconstruct(vector_id(6, 1)), changed[1], atol=1e-6)
    with pytest.raises(RuntimeError):
        caught.reconstruct(vector_id(7, 0))
    kind.save(caught)
    reopened = kind.load()
    assert sync(reopened, store, want(kind), kind.new)[1].action == "fresh" and 7 not in reopened.item_ids()


def test_another_layout_is_rebuilt(store, kind):
    populated(store, n=5)
    index, _ = sync(None, store, replace(want(kind), encoder="other/model"), kind.new)
    assert check(index, store, want(kind)) and sync(index, store, want(kind), kind.new)[1].action == "rebuilt"


def test_an_item_scores_its_best_of_three_vectors_and_counts_once(store, kind):
    """For q = e0, item 1's three vectors score 0.6, 0.8 and 0.1; item 2's one 0.7; item 3's 0.2 and 0.75."""
    def vec(first: float, other: int) -> np.ndarray:
        row = np.zeros(DIM, np.float32)
        row[0], row[other] = first, np.sqrt(1 - first ** 2)
        return row
    put(store, {1: np.stack([vec(0.6, 1), vec(0.8, 2), vec(0.1, 3)]), 2: vec(0.7, 4),
                3: np.stack([vec(0.2, 5), vec(0.75, 6)])})
    index, _ = sync(None, store, want(kind), kind.new)
    scores, ids, vectors = index.search(vec(1.0, 1), 5)
    assert ids[0].tolist() == [1, 3, 2, -1, -1]
    np.testing.assert_allclose(scores[0][:3], [0.8, 0.75, 0.7], atol=1e-6)
    assert scores[0][3] == -np.inf and vectors[0][:3].tolist() == [vector_id(1, 1), vector_id(3, 1), vector_id(2, 0)]


def test_k_distinct_items_when_one_item_has_many_better_vectors(store, kind):
    """Item 1's 60 vectors all beat every other item: the search goes deeper until it has k items."""
    rng = np.random.default_rng(3)
    query = unit(rng, 1)[0]
    near = query + 0.05 * unit(rng, 60)
    put(store, {1: near / np.linalg.norm(near, axis=1, keepdims=True)})
    put(store, {i: unit(rng, 1) for i in range(2, 12)})
    index, _ = sync(None, store, want(kind), kind.new)
    _, ids, _ = index.search(query, 4)
    assert ids[0][0] == 1 and len(set(ids[0].tolist())) == 4 and -1 not in ids[0]


def test_past_milvus_topk_limit_a_search_goes_on_without_the_items_found(store, tmp_path, monkeypatch):
    """Milvus answers at most 16,384 vectors a search (here 20): item 1's 60 vectors fill them, and the
    next items come from searches that leave item 1 out, ranked as FAISS ranks them."""
    monkeypatch.setattr(MilvusIndex, "max_depth", 20)
    rng = np.random.default_rng(3)
    query = unit(rng, 1)[0]
    near = query + 0.05 * unit(rng, 60)
    put(store, {1: near / np.linalg.norm(near, axis=1, keepdims=True)})
    put(store, {i: unit(rng, 1 if i % 2 else 30) for i in range(2, 40)})
    parts = [sync(None, store, want(k), k.new)[0] for k in (faiss_kind(tmp_path), milvus_kind(tmp_path))]
    for allowed in (None, np.arange(1, 30)):
        (faiss_scores, faiss_ids, _), (milvus_scores, milvus_ids, _) = (p.search(query, 12, allowed) for p in parts)
        np.testing.assert_array_equal(faiss_ids, milvus_ids)
        np.testing.assert_allclose(faiss_scores, milvus_scores, atol=1e-5)
        assert milvus_ids[0][0] == 1 and -1 not in milvus_ids[0]


def test_filters_give_k_items_when_k_exist(store, kind):
    items = populated(store, seed=1, n=200)
    index, _ = sync(None, store, want(kind), kind.new)
    rng = np.random.default_rng(4)
    query = unit(rng, 1)[0]
    few = rng.choice(np.arange(1, 201), 15, replace=False)
    most = np.setdiff1d(np.arange(1, 201), few)  # a Milvus filter written as "not in" the other 15
    for allowed in (few, most, np.concatenate([few, [10_001, 10_002]])):  # ids held elsewhere are ignored
        scores, ids, _ = index.search(query, 10, allowed)
        expected = exact(items, query, set(allowed.tolist()))[:10]
        assert ids[0].tolist() == [i for i, _ in expected]
        np.testing.assert_allclose(scores[0], [s for _, s in expected], atol=1e-5)
    _, ids, _ = index.search(query, 10, few[:3])
    assert sorted(ids[0][:3].tolist()) == sorted(few[:3].tolist()) and ids[0][3:].tolist() == [-1] * 7
    assert index.search(query, 10, np.array([10_001]))[1][0].tolist() == [-1] * 10


def test_scores_above_are_each_items_best_above_the_floor(store, kind):
    items = populated(store, seed=2, n=100)
    index, _ = sync(None, store, want(kind), kind.new)
    query = unit(np.random.default_rng(5), 1)[0]
    for allowed in (None, np.arange(1, 101, 2)):
        expected = [s for i, s in exact(items, query, None if allowed is None else set(allowed.tolist())) if s > 0.2]
        found = index.scores_above(query, 0.2, allowed)
        np.testing.assert_allclose(np.sort(found)[::-1], expected, atol=1e-5)


def test_vectors_gives_each_items_own(store, kind):
    items = populated(store, seed=6, n=12)
    index, _ = sync(None, store, want(kind), kind.new)
    got = index.vectors([3, 4, 999])
    assert sorted(got) == [3, 4]
    np.testing.assert_allclose(got[3], items[3], atol=1e-6)
    np.testing.assert_allclose(got[4], items[4], atol=1e-6)


def test_faiss_flat_and_milvus_flat_rank_alike(store, tmp_path):
    """The same SQL, each store's top 10 for 20 queries: the same items in the same order, filtered too."""
    populated(store, seed=7, n=400)
    parts = [sync(None, store, want(k), k.new)[0] for k in (faiss_kind(tmp_path), milvus_kind(tmp_path))]
    queries = unit(np.random.default_rng(8), 20)
    for allowed in (None, np.arange(1, 401, 7)):
        (faiss_scores, faiss_ids, _), (milvus_scores, milvus_ids, _) = (p.search(queries, 10, allowed) for p in parts)
        np.testing.assert_array_equal(faiss_ids, milvus_ids)
        np.testing.assert_allclose(faiss_scores, milvus_scores, atol=1e-5)
        assert (faiss_ids >= 0).all()


def test_a_library_on_milvus_lite_searches_as_faiss_and_verifies_clean(collection, settings, data_dir):
    root, _ = collection
    milvus = Library(settings.replace(vector_store="milvus:vectors.db"))
    milvus.run_index([str(root)])
    assert (data_dir / "vectors.db").exists() and not list(data_dir.glob("vectors.*.faiss"))
    faiss = Library(settings)  # the same SQL, its index files built from it
    for query in ("a red apple", "the sea", "bread"):
        request = SearchRequest([QueryPart("text", query)], k=8)
        found = [[(h.id, round(h.score, 4)) for h in library.search(request).results] for library in (milvus, faiss)]
        assert found[0] == found[1] and found[0]
    assert milvus.verify() == [] and faiss.verify() == []
    stats = milvus.stats()["index"]
    assert stats["type"] == "milvus FLAT" and stats["ntotal"] == faiss.stats()["index"]["ntotal"]
    assert {part["type"] for part in stats["by_modality"].values()} == {"milvus FLAT"}
    removed = milvus.remove([str(root / "red.jpg")])
    assert removed == 1 and milvus.verify() == []
    again = Library(settings.replace(vector_store="milvus:vectors.db"))  # Milvus kept the vectors and the state
    again.index()
    assert again.last_sync.action == "fresh" and again.verify() == []
    assert milvus.rebuild_index().action == "rebuilt" and milvus.verify() == []


def test_milvus_without_pymilvus_is_one_clear_line_on_open(settings, monkeypatch):
    """Said when the data dir is opened, not after an index run has embedded every file."""
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if it were not installed
    with pytest.raises(MMSearchError, match=r"^vector_store milvus needs pymilvus: pip install 'mmsearch\[milvus\]'$"):
        Library(settings.replace(vector_store="milvus:vectors.db"))


def test_a_bad_vector_store_is_an_error(settings):
    with pytest.raises(MMSearchError, match="vector_store.*not faiss, milvus:PATH.db or milvus:http://HOST:PORT"):
        settings.replace(vector_store="milvus")
