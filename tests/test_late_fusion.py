"""Per-modality indexes (named vector spaces) and late fusion over them, on hand-made vectors.

Scores and ranks are pinned against values worked out by hand in the comments.
"""
from __future__ import annotations

import datetime as dt
import json

import faiss
import numpy as np
import pytest

from mmsearch.errors import MMSearchError
from mmsearch.search import query as query_module
from mmsearch.search.query import Searcher
from mmsearch.search.request import Filters, QueryPart, SearchRequest
from mmsearch.modalities import MODALITIES
from mmsearch.search.store import Store
from mmsearch.search.tables import CAPTION, CONTENT, FUSED, OK, Item, Vector, vector_bytes, vector_id
from mmsearch.search.index_sync import check, sync
from mmsearch.search.partitioned import Partitioned
from mmsearch.search.index_types import IndexState
from mmsearch.search.milvus_index import FACTORY as MILVUS, MilvusIndex, collection, connect
from mmsearch.search.vector_index import FaissIndex

DIM = 8
KEY = "test/enc"


def unit(*pairs: tuple[int, float]) -> np.ndarray:
    """A unit vector with the given components; the rest of its length goes to its own spare axis."""
    vector = np.zeros(DIM, np.float64)
    for axis, value in pairs:
        vector[axis] = value
    spare = 1 - float(vector @ vector)
    assert spare >= 0
    vector[max(a for a, _ in pairs) + 1] = spare ** 0.5
    return vector.astype(np.float32)


def put(store: Store, item_id: int, modality: str, content: np.ndarray, caption: np.ndarray | None = None) -> None:
    with store.session() as session:
        generation = store.bump_generation(session)
        session.merge(Item(id=item_id, path=f"/m/{item_id}", modality=modality, size=1, mtime_ns=1, status=OK,
                           caption="words" if caption is not None else None, indexed_at=dt.datetime(2026, 1, 1)))
        session.flush()
        for slot, (kind, vector) in enumerate(((CONTENT, content), (CAPTION, caption))):
            if vector is not None:
                session.merge(Vector(item_id=item_id, slot=slot, kind=kind, encoder=KEY, dim=DIM, data=vector_bytes(vector),
                                     generation=generation))


def state(space: str, weights: dict[str, float], factory: str = "Flat") -> IndexState:
    return IndexState(0, KEY, DIM, factory, json.dumps(weights, sort_keys=True), space, "vector")


PARTS = {"new": FaissIndex}  # how searcher() makes an exact part: set per test by vector_store below


@pytest.fixture(autouse=True, params=["faiss", "milvus-lite"])
def vector_store(request, tmp_path, monkeypatch) -> str:
    """Every test here on FAISS Flat parts and on Milvus FLAT collections (milvus-lite): the scores and
    ranks worked out by hand hold on both."""
    if request.param == "milvus-lite":
        client = connect(str(tmp_path / "vectors.db"))
        monkeypatch.setitem(PARTS, "new", lambda wanted: MilvusIndex.create(client, wanted, collection("test", wanted.space)))
    return request.param


def searcher(store: Store, weights: dict[str, float] | None = None, factory: str = "Flat") -> Searcher:
    """Each modality's part made from SQL: exact parts by PARTS["new"], another FAISS type (IVF) by FAISS."""
    weights = weights or {"image": 1.0, "audio": 1.0, "text": 1.0}
    new = PARTS["new"] if factory == "Flat" else FaissIndex
    factory = MILVUS if new is not FaissIndex else factory
    parts = {space: sync(None, store, state(space, weights, factory), new)[0] for space in MODALITIES}
    return Searcher(store, Partitioned(parts, state(FUSED, weights, factory)))


def run(searcher_: Searcher, queries: dict[str, np.ndarray], parts: list[tuple[str, float]], **options):
    """Search with text parts whose 'embedding' is the hand-made vector named by the text."""
    request = SearchRequest([QueryPart("text", words, weight) for words, weight in parts], **options)
    return searcher_.search(request, lambda part: queries[part.value])


@pytest.fixture
def store(db_url):
    return Store(db_url)


def test_each_modality_index_holds_every_vector_of_its_items(store):
    image, caption, note, sound = unit((0, 0.6)), unit((1, 0.8)), unit((2, 0.5)), unit((3, 0.9))
    put(store, 1, "image", image, caption)
    put(store, 2, "text", note)
    put(store, 3, "audio", sound, caption)
    put(store, 4, "image", image)
    expected = {FUSED: [1, 2, 3, 4], "image": [1, 4], "text": [2], "audio": [3]}
    slots = {1: [0, 1], 2: [0], 3: [0, 1], 4: [0]}  # content, and caption where there is one
    for space, ids in expected.items():
        assert store.vector_ids(space).tolist() == [vector_id(i, s) for i in ids for s in slots[i]], space
    weights = {"image": 2.0, "audio": 1.0, "text": 0.5}
    mix = 2.0 * image.astype(np.float64) + 0.5 * caption  # normalise(w[image]·content + w[text]·caption)
    vectors = store.item_vectors([1, 2, 3, 4], weights)  # each item's one vector, for --like and dedupe
    np.testing.assert_allclose(vectors[1], mix / np.linalg.norm(mix), atol=1e-6)
    np.testing.assert_array_equal(vectors[4], image)
    np.testing.assert_array_equal(vectors[2], note)

    # Each modality's index is a cache of its own: a caption removed changes item 1 in "image" and "fused".
    exact = "Flat" if PARTS["new"] is FaissIndex else MILVUS
    indexes = {space: sync(None, store, state(space, weights, exact), PARTS["new"])[0] for space in expected}
    with store.session() as session:
        generation = store.bump_generation(session)
        session.query(Vector).filter_by(item_id=1, slot=1, kind=CAPTION).delete()
        session.query(Vector).filter_by(item_id=1).update({"generation": generation})
    store.remove_ids([2])
    slots[1] = [0]
    for space, index in indexes.items():
        assert check(index, store, state(space, weights, exact)), space  # every index lags behind SQL's generation
        caught, _ = sync(index, store, state(space, weights, exact))
        assert check(caught, store, state(space, weights, exact)) == [], space
        assert sorted(caught.ids().tolist()) == [vector_id(i, s) for i in expected[space] if i != 2
                                                 for s in slots[i]], space
        if 1 in expected[space]:
            np.testing.assert_allclose(caught.reconstruct(vector_id(1, 0)), image)


@pytest.fixture
def gap(store):
    """A modality gap by hand: every note is closer to the query (axis 0) than any picture is.
    Notes 1–3 score 0.9, 0.8, 0.7; pictures 4–6 score 0.3, 0.25, 0.2."""
    for item_id, score in ((1, 0.9), (2, 0.8), (3, 0.7)):
        put(store, item_id, "text", unit((0, score)))
    for item_id, score in ((4, 0.3), (5, 0.25), (6, 0.2)):
        put(store, item_id, "image", unit((0, score)))
    return store, {"q": unit((0, 1.0))}


def test_per_modality_lists_keep_one_modality_from_crowding_out_the_others(gap):
    store, queries = gap
    fused = run(searcher(store), queries, [("q", 1.0)], k=4, fusion="rrf", index=FUSED)
    assert fused.index == FUSED and [h.id for h in fused.results] == [1, 2, 3, 4]  # notes first: one list
    split = run(searcher(store), queries, [("q", 1.0)], k=6, fusion="rrf")
    # Two lists, each ranked on its own: note 1 and picture 4 are both first, 1/61 each; a tie goes to the
    # closer match (note 1: 0.9 against 0.3).
    assert split.index == "modality"
    assert [(h.id, h.score) for h in split.results] == [
        (1, pytest.approx(1 / 61)), (4, pytest.approx(1 / 61)), (2, pytest.approx(1 / 62)),
        (5, pytest.approx(1 / 62)), (3, pytest.approx(1 / 63)), (6, pytest.approx(1 / 63))]
    # Relative-score fusion normalises each list: 1 for each list's best, 0 for its worst.
    relative = run(searcher(store), queries, [("q", 1.0)], k=6, fusion="relative")
    assert [(h.id, h.score) for h in relative.results] == [
        (1, pytest.approx(1.0)), (4, pytest.approx(1.0)), (2, pytest.approx(0.5)),
        (5, pytest.approx(0.5)), (3, pytest.approx(0.0)), (6, pytest.approx(0.0))]
    # DBSF normalises by mean ± 3σ: notes 0.9/0.8/0.7 (μ 0.8, σ 0.1) and pictures 0.3/0.25/0.2 (μ 0.25,
    # σ 0.05) both map to 2/3, 1/2, 1/3 (equal up to rounding, so each pair's order is left open).
    dbsf = run(searcher(store), queries, [("q", 1.0)], k=6, fusion="dbsf")
    pairs = [sorted((h.id, round(h.score, 6)) for h in dbsf.results[n:n + 2]) for n in (0, 2, 4)]
    assert pairs == [[(1, round(2 / 3, 6)), (4, round(2 / 3, 6))], [(2, 0.5), (5, 0.5)],
                     [(3, round(1 / 3, 6)), (6, round(1 / 3, 6))]]
    # A request can ask for either index; early fusion has only the fused one.
    assert [h.id for h in run(searcher(store), queries, [("q", 1.0)], k=2, fusion="rrf",
                              index="fused").results] == [1, 2]
    with pytest.raises(MMSearchError, match="late fusion"):
        run(searcher(store), queries, [("q", 1.0)], fusion="early", index="modality")


def test_modality_filter_narrows_the_spaces(gap):
    store, queries = gap
    response = run(searcher(store), queries, [("q", 1.0)], k=6, fusion="rrf",
                   filters=Filters(modalities=["image"]))
    assert [h.id for h in response.results] == [4, 5, 6]


def test_explain_shows_what_each_vector_of_an_item_scored(store):
    # Picture 1 scores 0.3 and its caption 0.6; picture 2 scores 0.35 and has no caption.
    content, caption = unit((0, 0.3), (1, 0.2)), unit((0, 0.6), (2, 0.5))
    put(store, 1, "image", content, caption=caption)
    put(store, 2, "image", unit((0, 0.35)))
    put(store, 3, "text", unit((0, 0.9)))
    queries = {"q": unit((0, 1.0))}
    response = run(searcher(store), queries, [("q", 1.0)], k=3, fusion="rrf", explain=True)
    fused_1 = content.astype(np.float64) + caption
    fused_1 /= np.linalg.norm(fused_1)
    by_id = {h.id: h.parts[0] for h in response.results}
    # Image list: 1 (its best vector, the caption: 0.6) before 2 (0.35); text list: 3 alone. 3 and 1 tie at
    # 1/61: the closer match (3, 0.9) goes first.
    assert [(h.id, h.score) for h in response.results] == [(3, pytest.approx(1 / 61)), (1, pytest.approx(1 / 61)),
                                                           (2, pytest.approx(1 / 62))]
    assert by_id[1] == {"label": '"q"', "weight": 1.0, "score": pytest.approx(0.6, abs=1e-6), "rank": 1,
                        "match": {"kind": CAPTION, "score": pytest.approx(0.6, abs=1e-6), "text": "words"},
                        "vectors": {CAPTION: pytest.approx(0.6, abs=1e-6), CONTENT: pytest.approx(0.3, abs=1e-6)},
                        "item_vector": pytest.approx(fused_1[0], abs=1e-6)}
    assert by_id[2]["rank"] == 2 and set(by_id[2]["vectors"]) == {CONTENT}
    assert by_id[3]["rank"] == 1


@pytest.fixture
def deep(store, monkeypatch):
    """Ten pictures. Positive part p (axis 0): 1, 2, 3 lead with 0.6, 0.55, 0.5. Negative part n (axis 1):
    3 is 1st (0.65), 2 is 6th (0.4, behind 4–7), 1 is last, 10th (0.05). Lists reach 3 deep, so 2 and 1
    lie beyond the negative part's own list."""
    monkeypatch.setattr(query_module, "LATE_DEPTH", 3)
    a = {1: 0.6, 2: 0.55, 3: 0.5, 4: 0.4, 5: 0.35, 6: 0.3, 7: 0.25, 8: 0.2, 9: 0.15, 10: 0.1}
    b = {3: 0.65, 4: 0.6, 5: 0.55, 6: 0.5, 7: 0.45, 2: 0.4, 8: 0.35, 9: 0.3, 10: 0.25, 1: 0.05}
    for item_id in a:
        put(store, item_id, "image", unit((0, a[item_id]), (1, b[item_id])))
    return store, {"p": unit((0, 1.0)), "n": unit((1, 1.0))}


@pytest.mark.parametrize("late, factory, ranged", [(FUSED, "Flat", True), ("modality", "Flat", True),
                                                   ("modality", "IVF2,Flat", True), ("modality", "Flat", False)])
def test_a_negative_part_reaches_candidates_beyond_its_own_list(deep, late, factory, ranged, monkeypatch):
    """Flat indexes give candidates' vectors back; IVF ones do not, and SQL's are used (2 lists, both probed).
    An index type without range search ranks against the head of its ranking instead (here: all of it)."""
    store, queries = deep
    if not ranged:
        def no_range_search(*args, **kwargs):
            raise RuntimeError("range search not implemented")
        monkeypatch.setattr(faiss.IndexIDMap2, "range_search", no_range_search)
    rrf = run(searcher(store, factory=factory), queries, [("p", 1.0), ("n", -1.0)], k=2, fusion="rrf",
              explain=True, index=late)
    # Global ranks in n's full ranking: 1 → 10th, 2 → 6th, 3 → 1st.
    assert [(h.id, h.score) for h in rrf.results] == [(1, pytest.approx(1 / 61 - 1 / 70)),
                                                      (2, pytest.approx(1 / 62 - 1 / 66))]
    assert [p["rank"] for p in rrf.results[1].parts] == [2, 6]
    assert [p["rank"] for p in rrf.results[0].parts] == [1, 10]
    # Relative: p's list spans 0.5–0.6; n's scores span the candidates' lowest (0.05) to the global best (0.65).
    relative = run(searcher(store, factory=factory), queries, [("p", 1.0), ("n", -1.0)], k=2,
                   fusion="relative", index=late)
    assert [(h.id, h.score) for h in relative.results] == [
        (1, pytest.approx(1.0 - 0.0, abs=1e-5)), (2, pytest.approx(0.5 - 0.35 / 0.6, abs=1e-5))]
    # DBSF: p's list 0.6/0.55/0.5 has μ 0.55, σ 0.05 → 0.4..0.7. n's list is everything down to the lowest
    # candidate, all ten: μ 0.41, sample σ √(0.294 / 9) ≈ 0.18074 → 0.41 ± 0.54222.
    dbsf = run(searcher(store, factory=factory), queries, [("p", 1.0), ("n", -1.0)], k=2, fusion="dbsf",
               index=late)
    sigma = (0.294 / 9) ** 0.5
    assert [(h.id, h.score) for h in dbsf.results] == [
        (1, pytest.approx(0.2 / 0.3 - (0.05 - 0.41 + 3 * sigma) / (6 * sigma), abs=1e-5)),
        (2, pytest.approx(0.15 / 0.3 - (0.4 - 0.41 + 3 * sigma) / (6 * sigma), abs=1e-5))]


def test_late_fusion_needs_a_positive_part(gap):
    store, queries = gap
    with pytest.raises(MMSearchError, match="positive"):
        run(searcher(store), queries, [("q", -1.0)], fusion="rrf")
    early = run(searcher(store), queries, [("q", -1.0)], k=1, fusion="early")
    assert [h.id for h in early.results] == [6]  # the least like q


def test_a_modality_too_small_for_the_index_type_is_searched_exactly(data_dir, collection):
    """IVF4 needs 4 vectors to train: the image part (7) uses it; the text (3) and audio (1) parts fall back
    to Flat rather than failing the whole collection. Each vector is held once, in its modality's part."""
    from mmsearch.library import Library
    from mmsearch.settings import load_settings
    root, expected = collection
    library = Library(load_settings({"data_dir": str(data_dir), "model": "tiny", "index_type": "IVF4,Flat",
                                     "nprobe": 4}, env={}))
    library.run_index([str(root)])
    stats = library.stats()["index"]
    held = {m: library.store.vector_count(m) for m in MODALITIES}  # content vectors, and captions
    assert stats["type"] == "IVF4,Flat" and stats["ntotal"] == sum(held.values())
    assert stats["by_modality"] == {"image": {"ntotal": held["image"], "type": "IVF4,Flat"},
                                    "audio": {"ntotal": held["audio"], "type": "Flat"},
                                    "text": {"ntotal": held["text"], "type": "Flat"}}
    assert sorted(p.name for p in data_dir.glob("*.faiss")) == [f"vectors.{m}.faiss"
                                                                for m in ("audio", "image", "text")]
    for index in ("fused", "modality"):
        response = library.search(SearchRequest([QueryPart("text", "shapes"), QueryPart("text", "a beep", -1.0)],
                                                k=50, fusion="rrf", index=index))
        assert len(response.results) == sum(expected[m] for m in MODALITIES)  # items, each once
    early = library.search(SearchRequest([QueryPart("text", "shapes")], k=50))
    assert len(early.results) == sum(expected[m] for m in MODALITIES)  # the parts' top lists merged into one
    assert library.verify() == []
