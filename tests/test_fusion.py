"""Fusion formulas on hand-made vectors, the query syntax, filters and request options."""
from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest

from mmsearch.errors import MMSearchError
from mmsearch.library import Library
from mmsearch.search import fusion
from mmsearch.search.request import Filters, QueryPart, SearchRequest
from mmsearch.search.syntax import parse_query

from .media import picture


def test_early_fusion_by_hand():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(fusion.early([a, b], [1, 1]), [2 ** -0.5, 2 ** -0.5, 0], atol=1e-7)
    # 2·a − 0.5·b = (2, −0.5, 0) / √4.25
    np.testing.assert_allclose(fusion.early([a, b], [2, -0.5]), [2 / 4.25 ** 0.5, -0.5 / 4.25 ** 0.5, 0], atol=1e-7)
    with pytest.raises(MMSearchError, match="cancel"):
        fusion.early([a, a], [1, -1])


def test_rrf_by_hand():
    scores = fusion.rrf([[7, 8, 9], [9, 7]], [1.0, 2.0], k=60)
    assert scores[7] == pytest.approx(1 / 61 + 2 / 62)
    assert scores[8] == pytest.approx(1 / 62)
    assert scores[9] == pytest.approx(1 / 63 + 2 / 61)
    negative = fusion.rrf([[1, 2], [2]], [1.0, -1.0], k=60)
    assert negative[2] == pytest.approx(1 / 62 - 1 / 61) and negative[1] == pytest.approx(1 / 61)


def test_relative_score_fusion_by_hand():
    fused = fusion.relative([[(1, 0.9), (2, 0.5), (3, 0.1)], [(3, 0.8), (1, 0.4)]], [1.0, 0.5])
    assert fused[1] == pytest.approx(1.0 + 0.5 * 0.0)
    assert fused[2] == pytest.approx(0.5)  # (0.5−0.1)/(0.9−0.1)
    assert fused[3] == pytest.approx(0.0 + 0.5 * 1.0)
    assert fusion.relative([[(4, 0.3)]], [-2.0]) == {4: -2.0}


def test_distribution_based_score_fusion_by_hand():
    # List 1: mean 0.5, sample σ 0.4 → range −0.7..1.7 (2.4 wide). List 2: mean 0.6, σ √0.08 → 0.6 ± 0.8485.
    fused = fusion.dbsf([[(1, 0.9), (2, 0.5), (3, 0.1)], [(3, 0.8), (1, 0.4)]], [1.0, 0.5])
    spread = 6 * 0.08 ** 0.5
    assert fused[1] == pytest.approx(1.6 / 2.4 + 0.5 * (0.4 - 0.6 + spread / 2) / spread)
    assert fused[2] == pytest.approx(0.5)
    assert fused[3] == pytest.approx(0.8 / 2.4 + 0.5 * (0.8 - 0.6 + spread / 2) / spread)
    assert fused[1] == pytest.approx(0.857741, abs=1e-6) and fused[3] == pytest.approx(0.642259, abs=1e-6)
    assert fusion.dbsf([[(4, 0.3)]], [-2.0]) == {4: -1.0}  # one score: 0.5, as Qdrant gives
    assert fusion.dbsf([[(5, 0.3), (6, 0.3)]], [1.0]) == {5: 0.5, 6: 0.5}


@pytest.mark.parametrize("text, expected", [
    ('"sunset" - "people"', [("text", "sunset", 1.0), ("text", "people", -1.0)]),
    ("2:cat", [("text", "cat", 2.0)]),
    ("like:42", [("item", 42, 1.0)]),
    ("beach -crowd", [("text", "beach", 1.0), ("text", "crowd", -1.0)]),
    ("a dog on a beach", [("text", "a dog on a beach", 1.0)]),
    ("cat + 0.5:dog", [("text", "cat", 1.0), ("text", "dog", 0.5)]),
    ("-1.5:rain", [("text", "rain", -1.5)]),
    # an apostrophe inside or at the end of a word is a letter; one that starts a term quotes up to a
    # closing one that ends a term (the web box and the API: "don't stop" was "No closing quotation")
    ("don't stop", [("text", "don't stop", 1.0)]),
    ("the keeper's umbrellas", [("text", "the keeper's umbrellas", 1.0)]),
    ("'tis the season", [("text", "'tis the season", 1.0)]),
    ("'sea view' - boats'", [("text", "sea view", 1.0), ("text", "boats'", -1.0)]),
])
def test_query_syntax(text, expected):
    assert [(p.kind, p.value, p.weight) for p in parse_query(text)] == expected


def test_query_syntax_reads_files_only_when_allowed(tmp_path):
    image = tmp_path / "photo.jpg"
    picture(1).save(image)
    parts = parse_query(f'"sunset" + 0.5:{image} - "people"', allow_files=True)
    assert [(p.kind, p.weight) for p in parts] == [("text", 1.0), ("image", 0.5), ("text", -1.0)]
    assert parts[1].value == image.read_bytes()
    as_words = parse_query(f"{image} ../../etc/passwd", allow_files=False)
    assert [(p.kind, p.value) for p in as_words] == [("text", f"{image} ../../etc/passwd")]


@pytest.mark.parametrize("make", [
    lambda: QueryPart("text", "  "), lambda: QueryPart("item", "7"), lambda: QueryPart("sound", b"x"),
    lambda: QueryPart("text", "x", 0), lambda: SearchRequest([]), lambda: SearchRequest([QueryPart("text", "x")], k=0),
    lambda: SearchRequest([QueryPart("text", "x")], fusion="max"), lambda: Filters(modalities=["video"]),
    lambda: SearchRequest([QueryPart("text", "x")], dedupe=1.5),
])
def test_invalid_requests_are_errors(make):
    with pytest.raises(MMSearchError):
        make()


@pytest.fixture
def library(settings, collection, backend):
    """The sample collection indexed on each backend (SQLite or PostgreSQL, FAISS or milvus-lite): filters
    and fusion must agree on all of them."""
    root, _ = collection
    library = Library(settings.replace(**backend))
    library.run_index([root])
    return library, root


def ids_of(response):
    return [hit.id for hit in response.results]


def test_filters_inside_the_search(library):
    library, root = library
    everything = library.search(SearchRequest([QueryPart("text", "shapes")], k=100))
    paths = {hit.item.path: hit.item for hit in everything.results}

    def search(**filters):
        return {hit.item.path for hit in library.search(SearchRequest([QueryPart("text", "shapes")], k=100,
                                                                       filters=Filters(**filters))).results}
    assert search(path_prefix=str(root / "sub dir")) == {p for p in paths if p.startswith(str(root / "sub dir"))}
    assert search(path_glob="*.png") == {p for p in paths if p.endswith(".png")}
    assert search(has_caption=True) == {str(root / "red.jpg")}
    assert str(root / "red.jpg") not in search(has_caption=False)
    small = min(item.size for item in paths.values())
    assert search(max_size=small) == {p for p, item in paths.items() if item.size == small}
    os.utime(root / "green.png", (0, 0))
    library.run_index([root])
    assert search(date_to=dt.datetime(1990, 1, 1)) == {str(root / "green.png")}
    assert str(root / "green.png") not in search(date_from=dt.datetime(2000, 1, 1))
    assert search(modalities=["audio"]) == {str(root / "beep.wav")}


def test_filtered_search_returns_k_when_k_exist(settings, backend, tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(60):
        picture(i, (32, 32)).save(root / f"{i:02d}.png")
    for i in range(6):
        (root / f"note{i}.txt").write_text(f"note number {i}")
    library = Library(settings.replace(**backend))
    library.run_index([root])
    response = library.search(SearchRequest([QueryPart("image", (root / "00.png").read_bytes())], k=5,
                                            filters=Filters(modalities=["text"])))
    assert len(response.results) == 5 and {h.item.modality for h in response.results} == {"text"}


def test_like_excluding_itself_and_exact_duplicates(settings, backend, tmp_path):
    root = tmp_path / "dups"
    root.mkdir()
    for name in ("a.png", "b.png"):
        picture(5).save(root / name)
    for i in range(4):
        picture(10 + i).save(root / f"other{i}.png")
    library = Library(settings.replace(**backend))
    library.run_index([root])
    [a] = library.store.ids_under(str(root / "a.png"))
    [b] = library.store.ids_under(str(root / "b.png"))
    plain = ids_of(library.search(SearchRequest([QueryPart("item", a)], k=3)))
    assert plain[0] == a and b in plain
    excluded = ids_of(library.search(SearchRequest([QueryPart("item", a)], k=3, exclude_self=True)))
    assert a not in excluded and b not in excluded and len(excluded) == 3
    deduped = ids_of(library.search(SearchRequest([QueryPart("item", a)], k=6, dedupe="hash")))
    assert (a in deduped) != (b in deduped) and len(deduped) == 5
    near = ids_of(library.search(SearchRequest([QueryPart("item", a)], k=6, dedupe=0.999)))
    assert len(near) == 5


def test_explain_and_paging(library):
    library, root = library
    parts = [QueryPart("text", "red"), QueryPart("image", (root / "green.png").read_bytes(), 0.5, "green.png")]
    for how in ("early", "rrf", "relative"):
        response = library.search(SearchRequest(parts, k=3, fusion=how, explain=True))
        assert len(response.results) == 3 and response.next_offset == 3
        for hit in response.results:
            assert [p["label"] for p in hit.parts] == ['"red"', "green.png"]
            assert all(-1.0001 <= p["score"] <= 1.0001 for p in hit.parts)
            if how != "early":
                assert any(p["rank"] for p in hit.parts)
        scores = [h.score for h in response.results]
        assert scores == sorted(scores, reverse=True)
        if how == "early":
            query = fusion.early([library.embed_query("text", "red")[0], library.embed_query(
                "image", (root / "green.png").read_bytes())[0]], [1.0, 0.5])
            for hit in response.results:
                own = library.store.part_vectors([hit.id])[hit.id]  # an item scores its best vector
                assert hit.score == pytest.approx(max(float(row.vector @ query) for row in own), abs=1e-5)
        second = library.search(SearchRequest(parts, k=3, offset=3, fusion=how))
        assert not set(ids_of(second)) & set(ids_of(response))
