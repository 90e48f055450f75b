"""The index chosen by size (index_type auto): exact below ann_threshold vectors, IVF above with nlist from the
count, trained on a sample of everything SQL holds, rebuilt when the collection grows past the next step (in
the background in a server, swapped in whole); and IVF indexes that stay exact caches of SQL through removals,
filters and reconstruction."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mmsearch.index_cache import IndexCache
from mmsearch.search.index_sync import check, sync
from mmsearch.search.index_types import auto_factory, training_size
from mmsearch.search.store import Store
from mmsearch.search.tables import item_of, vector_id
from mmsearch.search.vector_index import FaissIndex
from mmsearch.settings import load_settings

from .test_vector_index import DIM, put, unit, want


@pytest.fixture
def store(db_url):
    return Store(db_url)


def clustered(rng, n, clusters=8):
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32) * 2
    rows = unit(rng, n) * 0.5 + centres[rng.integers(0, clusters, n)] / 2
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_auto_factory_steps_with_the_count():
    assert auto_factory(49_999, "Flat", 50_000) == "Flat"
    assert auto_factory(10, "SQ8", 50_000) == "SQ8"
    # nlist ≈ √n, in steps of √2 as n doubles: 2^17 → 362 lists, 2^20 → 1024
    assert auto_factory(131_072, "Flat", 50_000) == "IVF362,Flat"
    assert auto_factory(1_000_000, "SQfp16", 50_000) == "IVF1024,SQfp16"
    assert auto_factory(1_400_000, "Flat", 50_000) == "IVF1024,Flat"  # the same step: no rebuild
    assert auto_factory(1_500_000, "Flat", 50_000) == "IVF1448,Flat"  # past it
    assert training_size("IVF1024,Flat", 10_000_000) == 64 * 1024
    assert training_size("IVF1024,Flat", 5_000) == 5_000
    assert training_size("Flat", 5_000) == 0


def test_ivf_cache_stays_exact_through_removals(store):
    """IVF ids were positions under an IndexIDMap2, which renumbers after remove_ids as only a flat index
    does: after one removal every later item was found under another item's id (or none)."""
    rng = np.random.default_rng(0)
    vectors = clustered(rng, 400)
    put(store, {i + 1: vectors[i] for i in range(400)})
    index, _ = sync(None, store, want("IVF4,Flat"))
    store.remove_ids(list(range(1, 101)))
    put(store, {401: vectors[0]})
    index, report = sync(index, store, want("IVF4,Flat"))
    assert report.action == "caught-up" and check(index, store, want("IVF4,Flat")) == []
    index.nprobe = 4
    _, ids, _ = index.search(vectors[100:400], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(101, 401))
    np.testing.assert_allclose(index.reconstruct(vector_id(401, 0)), vectors[0], rtol=1e-6)
    got = index.vectors([150, 401])
    np.testing.assert_allclose(got[150][0], vectors[149], rtol=1e-6)


def test_an_old_ivf_file_under_an_id_map_is_rebuilt(store, tmp_path):
    import faiss
    rng = np.random.default_rng(1)
    vectors = clustered(rng, 100)
    put(store, {i + 1: vectors[i] for i in range(100)})
    inner = faiss.index_factory(DIM, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    old = FaissIndex(want("IVF4,Flat"), faiss.IndexIDMap2(inner))
    old.cpu.train(vectors)
    old.cpu.add_with_ids(vectors, np.array([vector_id(i + 1, 0) for i in range(100)]))
    old.state.generation = store.generation()
    old.save(tmp_path / "v.faiss")
    assert FaissIndex.load(tmp_path / "v.faiss") is None  # unusable: the next sync rebuilds it


def test_a_filtered_ivf_search_returns_k_when_k_exist(store):
    """One probed list of 16 holds few of the allowed items: the search still finds k, with exact scores."""
    rng = np.random.default_rng(2)
    vectors = clustered(rng, 800)
    put(store, {i + 1: vectors[i] for i in range(800)})
    index, _ = sync(None, store, want("IVF16,Flat"))
    exact, _ = sync(None, store, want("Flat"))
    index.nprobe = 1
    for allowed in (np.arange(1, 801, 40), np.arange(1, 801, 3)):
        scores, ids, _ = index.search(vectors[:4], 10, allowed)
        assert (ids >= 0).all() and set(ids.ravel().tolist()) <= set(allowed.tolist())
        truth_scores, truth, _ = exact.search(vectors[:4], 10, allowed)
        if len(allowed) <= 20:  # few enough to score them all: exact
            np.testing.assert_array_equal(ids, truth)
            np.testing.assert_allclose(scores, truth_scores, rtol=1e-5)


def test_training_uses_a_sample_of_the_whole_collection(store, monkeypatch):
    """Trained on a sample drawn from all of SQL (not the first chunk): vectors of a cluster written last
    are in the training set."""
    import faiss
    rng = np.random.default_rng(3)
    first, last = unit(rng, 800) + 3, unit(rng, 800) - 3
    put(store, {i + 1: first[i] for i in range(800)})
    put(store, {801 + i: last[i] for i in range(800)})
    trained = []
    real = faiss.IndexIVFFlat.train
    monkeypatch.setattr(faiss.IndexIVFFlat, "train", lambda self, x: (trained.append(np.array(x)), real(self, x))[1])
    monkeypatch.setattr("mmsearch.search.index_types.PER_LIST", 20)
    index, _ = sync(None, store, want("IVF8,Flat"))
    assert len(trained) == 1 and len(trained[0]) == 8 * 20
    assert (trained[0].mean(axis=1) > 0).any() and (trained[0].mean(axis=1) < 0).any()
    assert check(index, store, want("IVF8,Flat")) == []


def cache_for(store, tmp_path, threshold):
    settings = load_settings({"data_dir": str(tmp_path), "model": "tiny", "index_type": "auto",
                              "ann_threshold": threshold})
    store.set_meta("model", {"name": "test", "pretrained": "enc", "dim": DIM})
    return IndexCache(settings, store, tmp_path)


def test_auto_index_switches_to_ivf_when_the_collection_grows(store, tmp_path):
    rng = np.random.default_rng(4)
    vectors = clustered(rng, 1200)
    put(store, {i + 1: vectors[i] for i in range(500)})
    cache = cache_for(store, tmp_path, 1000)
    assert cache.index().parts["image"].state.factory == "Flat"
    put(store, {i + 1: vectors[i] for i in range(500, 1200)})
    part = cache.index(refresh=True).parts["image"]
    assert part.state.factory == auto_factory(1200, "Flat", 1000) == "IVF32,Flat"
    assert cache.problems() == [] and part.ntotal == 1200
    assert cache.stats()["by_modality"]["image"]["type"] == "IVF32,Flat"


def served(store, tmp_path, seed):
    """A server's cache (background rebuilds) over 500 of 1,200 clustered vectors, opened: exact below 1,000."""
    vectors = clustered(np.random.default_rng(seed), 1200)
    put(store, {i + 1: vectors[i] for i in range(500)})
    cache = cache_for(store, tmp_path, 1000)
    cache.background = True
    cache.index()
    return cache, vectors


def test_a_server_keeps_searching_the_old_index_while_the_new_one_is_built(store, tmp_path, monkeypatch):
    cache, vectors = served(store, tmp_path, 5)
    release = threading.Event()
    import mmsearch.index_cache as module
    real = module.sync

    def slow_rebuild(index, *args):
        if index is None:  # the background build from SQL
            assert release.wait(20)
        return real(index, *args)
    monkeypatch.setattr(module, "sync", slow_rebuild)
    put(store, {i + 1: vectors[i] for i in range(500, 1200)})
    during = cache.index(refresh=True)  # returns at once: the old layout, caught up
    assert during.parts["image"].state.factory == "Flat" and during.ntotal == 1200
    _, ids, _ = during.search(vectors[700], 1)
    assert ids[0][0] == 701
    assert cache.retraining() == ["image"]
    release.set()
    assert cache.wait_retrained(20)
    after = cache.index()
    assert after.parts["image"].state.factory == "IVF32,Flat" and after.ntotal == 1200
    assert after.parts["image"].batcher is not None  # a server's concurrent searches share FAISS calls
    assert sorted(item_of(after.ids()).tolist()) == list(range(1, 1201))
    assert cache.problems() == [] and cache.retraining() == []


@pytest.mark.parametrize("factory", ["Flat", "SQ8", "IVF4,Flat"])
def test_a_memory_mapped_index_searches_and_is_copied_before_it_changes(store, tmp_path, factory):
    """faiss aborts the whole process (an assertion) when a mapped index grows: every change copies it first,
    and the file stays as it was until the index is saved again."""
    rng = np.random.default_rng(6)
    vectors = clustered(rng, 300)
    put(store, {i + 1: vectors[i] for i in range(200)})
    built, _ = sync(None, store, want(factory))
    path = tmp_path / "v.faiss"
    built.save(path)
    on_disk = path.read_bytes()
    mapped = FaissIndex.load(path, mapped=True)
    assert mapped.mapped and mapped.ntotal == 200
    mapped.nprobe = 4
    np.testing.assert_array_equal(mapped.search(vectors[:20], 3)[1], built.search(vectors[:20], 3)[1])
    put(store, {i + 1: vectors[i] for i in range(200, 300)})
    store.remove_ids([1, 2])
    caught, report = sync(mapped, store, want(factory))
    assert report.action == "caught-up" and not caught.mapped and caught.ntotal == 298
    assert check(caught, store, want(factory)) == [] and path.read_bytes() == on_disk
    _, ids, _ = caught.search(vectors[250], 1)
    assert ids[0][0] == 251


def test_many_query_rows_in_one_call_rank_as_each_row_alone(store):
    """The first scan of every row is one FAISS call (what a server's batcher hands over); a row whose first
    depth names fewer than k items searches again on its own."""
    import datetime as dt
    from mmsearch.search.tables import CONTENT, OK, Item, Vector, vector_bytes
    rng = np.random.default_rng(7)
    vectors = clustered(rng, 400)
    with store.session() as session:  # items 1-10 with 30 vectors each crowd the first depth; 11-110 one each
        generation = store.bump_generation(session)
        for item in range(1, 111):
            session.add(Item(id=item, path=f"/m/{item}", modality="image", size=1, mtime_ns=1, status=OK,
                             indexed_at=dt.datetime(2026, 1, 1)))
        session.flush()
        for n in range(400):
            item, slot = (n // 30 + 1, n % 30) if n < 300 else (n - 289, 0)
            session.add(Vector(item_id=item, slot=slot, kind=CONTENT, encoder="test/enc", dim=DIM,
                               data=vector_bytes(vectors[n]), generation=generation))
    index, _ = sync(None, store, want("Flat"))
    queries = vectors[::37]
    together = index.search(queries, 12)
    alone = [index.search(query, 12) for query in queries]
    for n in range(3):
        np.testing.assert_array_equal(together[n], np.concatenate([row[n] for row in alone]))
    assert all(len(set(row[1][0].tolist())) == 12 for row in alone)


def test_a_background_build_that_fails_keeps_the_old_part_and_is_not_retried(store, tmp_path, monkeypatch, caplog):
    cache, vectors = served(store, tmp_path, 8)
    import mmsearch.index_cache as module
    real, builds = module.sync, []

    def failing(index, *args):
        if index is None:
            builds.append(1)
            raise MemoryError("no room for the new part")
        return real(index, *args)
    monkeypatch.setattr(module, "sync", failing)
    put(store, {i + 1: vectors[i] for i in range(500, 1200)})
    cache.index(refresh=True)
    assert cache.wait_retrained(20)
    assert "no room for the new part" in cache.retrain_error and "no room" in caplog.text
    put(store, {1201: vectors[0]})
    part = cache.index(refresh=True).parts["image"]
    assert cache.wait_retrained(20) and builds == [1]  # not rebuilt again for the same type
    assert part.state.factory == "Flat" and part.ntotal == 1201


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_with_a_gpu_the_copy_is_searched_and_any_gpu_failure_falls_back_to_the_cpu(store, monkeypatch, factory):
    """No GPU here: faiss is made to report one. Its copy (here a CPU clone standing in for the GPU index,
    nprobe set on it) answers unfiltered searches; a type the GPU cannot hold, or a failing GPU search, is
    answered by the CPU index with the same results."""
    import faiss
    rng = np.random.default_rng(9)
    vectors = clustered(rng, 300)
    put(store, {i + 1: vectors[i] for i in range(300)})
    index, _ = sync(None, store, want(factory))
    index.nprobe = 4
    expected = index.search(vectors[:10], 5)
    copies, nprobes = [], []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda cpu: copies.append(faiss.clone_index(cpu)) or copies[-1])

    class Space:  # faiss-gpu's; absent from faiss-cpu
        def set_index_parameter(self, gpu, name, value):
            nprobes.append((name, value))
    monkeypatch.setattr(faiss, "GpuParameterSpace", Space, raising=False)
    index._gpu_stale = True
    got = index.search(vectors[:10], 5)
    assert len(copies) == 1 and index.device == "gpu"
    assert nprobes == ([("nprobe", 4)] if "IVF" in factory else [])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)

    def unavailable(cpu):
        raise RuntimeError("this index type has no GPU version")
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", unavailable)
    index._gpu_stale = True
    for a, b in zip(index.search(vectors[:10], 5), expected):
        np.testing.assert_array_equal(a, b)
    assert index.device == "cpu"
