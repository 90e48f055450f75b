"""The FAISS file is a cache of SQL: caught up, rebuilt, filtered, saved atomically."""
from __future__ import annotations

import datetime as dt
import fnmatch

import numpy as np
import pytest

from mmsearch.search.request import Filters
from mmsearch.search.store import Store
from mmsearch.search.tables import CONTENT, OK, Item, Vector, item_of, vector_bytes, vector_id
from mmsearch.search.index_sync import check, sync
from mmsearch.search.partitioned import Partitioned
from mmsearch.search.index_types import IndexState
from mmsearch.search.vector_index import FaissIndex

DIM = 8
KEY = "test/enc"
WEIGHTS = '{"audio": 1.0, "image": 1.0, "text": 1.0}'


def want(factory: str, encoder: str = KEY) -> IndexState:
    return IndexState(0, encoder, DIM, factory, WEIGHTS, ids="vector")


def unit(rng, n):
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def put(store: Store, vectors: dict[int, np.ndarray], modality: str = "image") -> None:
    with store.session() as session:
        generation = store.bump_generation(session)
        for item_id, vector in vectors.items():
            session.merge(Item(id=item_id, path=f"/m/{item_id}", modality=modality, size=1, mtime_ns=1,
                               status=OK, indexed_at=dt.datetime(2026, 1, 1)))
            session.flush()
            session.merge(Vector(item_id=item_id, slot=0, kind=CONTENT, encoder=KEY, dim=DIM, data=vector_bytes(vector),
                                 generation=generation))


@pytest.fixture
def store(db_url):
    return Store(db_url)


def test_rebuild_then_fresh_then_catch_up(store, tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng, 20)
    put(store, {i + 1: vectors[i] for i in range(20)})
    index, report = sync(None, store, want("Flat"))
    assert report.action == "rebuilt" and index.ntotal == 20
    path = tmp_path / "v.faiss"
    index.save(path)

    loaded = FaissIndex.load(path)
    again, report = sync(loaded, store, want("Flat"))
    assert report.action == "fresh"

    changed = unit(rng, 1)[0]
    put(store, {5: changed, 21: vectors[0]})
    store.remove_ids([7])
    assert check(again, store, want("Flat"))
    caught, report = sync(again, store, want("Flat"))
    assert report.action == "caught-up" and report.removed == 2  # item 7, and item 5's old vector
    assert check(caught, store, want("Flat")) == []
    np.testing.assert_allclose(caught.reconstruct(vector_id(5, 0)), changed)
    scores, ids, _ = caught.search(changed, 1)
    assert ids[0][0] == 5 and scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_wrong_encoder_or_missing_file_rebuilds(store, tmp_path):
    rng = np.random.default_rng(1)
    put(store, {i: v for i, v in enumerate(unit(rng, 5), start=1)})
    index, _ = sync(None, store, want("Flat", "other/model"))
    assert sync(index, store, want("Flat"))[1].action == "rebuilt"
    assert FaissIndex.load(tmp_path / "missing.faiss") is None
    (tmp_path / "junk.faiss").write_bytes(b"junk")
    (tmp_path / "junk.faiss.json").write_text("{}")
    assert FaissIndex.load(tmp_path / "junk.faiss") is None


def test_duplicate_ids_in_cache_are_repaired(store):
    rng = np.random.default_rng(2)
    vectors = unit(rng, 4)
    put(store, {i + 1: vectors[i] for i in range(4)})
    index, _ = sync(None, store, want("Flat"))
    index.add(np.array([vector_id(2, 0)]), vectors[1:2])  # e.g. a crash between saving the index and its sidecar
    assert "index holds duplicate ids" in check(index, store, want("Flat"))
    repaired, _ = sync(index, store, want("Flat"))
    assert check(repaired, store, want("Flat")) == []


def test_filter_inside_search_returns_k_when_k_exist(store):
    rng = np.random.default_rng(3)
    vectors = unit(rng, 300)
    put(store, {i + 1: vectors[i] for i in range(290)}, "image")
    put(store, {i + 1: vectors[i] for i in range(290, 300)}, "text")
    index, _ = sync(None, store, want("Flat"))
    allowed = store.filter_ids(Filters(modalities=["text"]))
    assert sorted(allowed.tolist()) == list(range(291, 301))
    scores, ids, _ = index.search(vectors[0], 5, allowed)
    assert len(set(ids[0])) == 5 and set(ids[0]) <= set(allowed)
    assert list(scores[0]) == sorted(scores[0], reverse=True)


def test_ivf_index_type(store):
    rng = np.random.default_rng(4)
    vectors = unit(rng, 400)
    put(store, {i + 1: vectors[i] for i in range(400)})
    index, report = sync(None, store, want("IVF4,Flat"))
    assert report.action == "rebuilt" and index.ntotal == 400
    assert check(index, store, want("IVF4,Flat")) == []
    exact, _ = sync(None, store, want("Flat"))
    index.nprobe = 4  # every list visited: the same answers as exact search
    np.testing.assert_array_equal(index.search(vectors[:5], 10)[1], exact.search(vectors[:5], 10)[1])
    index.nprobe = 1  # one list of four: approximate, so some answers must differ from exact search
    assert not np.array_equal(index.search(vectors[:20], 10)[1], exact.search(vectors[:20], 10)[1])
    allowed = np.arange(1, 401, 2)
    filtered = index.search(vectors[:5], 10, allowed)[1]
    assert set(filtered[filtered >= 0].tolist()) <= set(allowed.tolist())


def test_save_is_atomic(store, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    put(store, {1: unit(rng, 1)[0]})
    index, _ = sync(None, store, want("Flat"))
    path = tmp_path / "v.faiss"
    index.save(path)
    good = path.read_bytes()
    import faiss

    def explode(_index, name):
        with open(name, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(faiss, "write_index", explode)
    with pytest.raises(RuntimeError):
        index.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_path_filters_match_exactly_under_any_collation(store):
    """PostgreSQL here sorts by an ICU English collation (spaces, dashes and case count for little), not by
    bytes: a prefix or glob must still select exactly the paths that start with / match it."""
    paths = ["/m/sub dir/x.png", "/m/subdir2/y.png", "/m/sub-dir/z.png", "/m/Sub dir/w.png", "/m/sub dir",
             "/m/sub dirt/v.png", "/m/sub dir/deeper/u.PNG", "/m/süb dir/t.png", "/m/sub_dir/s.png",
             "/m/sub%dir/r.png"]
    with store.session() as session:
        for n, path in enumerate(paths, start=1):
            session.add(Item(id=n, path=path, modality="image", size=1, mtime_ns=1, status=OK,
                             indexed_at=dt.datetime(2026, 1, 1)))

    def chosen(**filters) -> set[str]:
        return {paths[i - 1] for i in store.filter_ids(Filters(**filters)).tolist()}
    assert chosen(path_prefix="/m/sub dir/") == {"/m/sub dir/x.png", "/m/sub dir/deeper/u.PNG"}
    assert chosen(path_prefix="/m/sub_dir/") == {"/m/sub_dir/s.png"}  # _ and % are not wildcards here
    assert chosen(path_prefix="/m/sub%dir/") == {"/m/sub%dir/r.png"}
    assert chosen(path_glob="/m/sub dir/*.png") == {"/m/sub dir/x.png"}  # case matters, as in file names
    assert chosen(path_glob="/m/sub?dir/*") == {"/m/sub dir/x.png", "/m/sub dir/deeper/u.PNG", "/m/sub-dir/z.png",
                                                "/m/sub_dir/s.png", "/m/sub%dir/r.png"}
    assert chosen(path_glob="*/deeper/*") == {"/m/sub dir/deeper/u.PNG"}
    for pattern in ("*.PNG", "*[*", "/m/s?b*", "*dir", "/m/sub_dir/*", "*%*"):  # fnmatch is the reference
        assert chosen(path_glob=pattern) == {p for p in paths if fnmatch.fnmatchcase(p, pattern.replace("[", "[[]"))}


def test_the_partitioned_index_ranks_as_one_index_would(store):
    """The main index is one part per modality; its merged top-k equals a single index's, filters included."""
    rng = np.random.default_rng(5)
    vectors = unit(rng, 60)
    for modality, ids in (("image", range(1, 31)), ("audio", range(31, 41)), ("text", range(41, 61))):
        put(store, {i: vectors[i - 1] for i in ids}, modality)
    single, _ = sync(None, store, want("Flat"))
    parts = {m: sync(None, store, IndexState(0, KEY, DIM, "Flat", WEIGHTS, m, "vector"))[0] for m in ("image", "audio", "text")}
    whole = Partitioned(parts, want("Flat"))
    assert whole.ntotal == 60 and sorted(whole.item_ids().tolist()) == list(range(1, 61))
    queries = unit(rng, 5)
    allowed = np.arange(2, 61, 3)
    for k, filtered in ((7, None), (60, None), (100, None), (5, allowed)):
        expected_scores, expected_ids, _ = single.search(queries, k, filtered)
        scores, ids, _ = whole.search(queries, k, filtered)
        np.testing.assert_array_equal(ids[:, :expected_ids.shape[1]], expected_ids)
        np.testing.assert_allclose(scores[:, :expected_ids.shape[1]], expected_scores, rtol=1e-6)
    only_audio = whole.only(["audio"]).search(queries[0], 3)[1][0]
    assert set(only_audio.tolist()) <= set(range(31, 41)) and len(only_audio) == 3
    np.testing.assert_array_equal(np.sort(whole.scores_above(queries[0], 0.2)),
                                  np.sort(single.scores_above(queries[0], 0.2)))
    np.testing.assert_array_equal(whole.reconstruct(vector_id(45, 0)), vectors[44])


def test_catch_up_is_not_undone_by_a_commit_during_it(store, monkeypatch):
    """Another process (an index run) commits while a reader catches up: the reader keeps its caught-up index
    (the later commit is applied by the next sync) instead of rebuilding the whole index from SQL under the
    server's write lock — a rebuild of 100k vectors stalled every request for ~40 s in
    benchmarks/api_load_indexing.py."""
    rng = np.random.default_rng(5)
    vectors = unit(rng, 30)
    put(store, {i + 1: vectors[i] for i in range(20)})
    index, _ = sync(None, store, want("Flat"))
    put(store, {21: vectors[20]})
    inner, commits = store.iter_vectors, iter([{22: vectors[21]}, {23: vectors[22]}])

    def commit_meanwhile(*args, **kwargs):  # each read of the catch-up is followed by another process's commit
        yield from inner(*args, **kwargs)
        batch = next(commits, None)
        if batch:
            put(store, batch)

    monkeypatch.setattr(store, "iter_vectors", commit_meanwhile)
    caught, report = sync(index, store, want("Flat"))
    assert report.action == "caught-up"
    assert 21 in caught.item_ids() and check(caught, store, want("Flat"))  # behind the later commits, and it knows
    monkeypatch.setattr(store, "iter_vectors", inner)
    again, report = sync(caught, store, want("Flat"))
    assert report.action == "caught-up" and check(again, store, want("Flat")) == []
    assert sorted(again.item_ids().tolist()) == sorted(item_of(store.vector_ids()).tolist()) == list(range(1, 23))
