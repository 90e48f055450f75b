"""Issue 13: a vector as a query part (clip-retrieval's `embedding` query) in the API, the query syntax and the
library, checked against the data dir's dimension; and the LRU cache of text-query vectors (as Immich keeps)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mmsearch.errors import MMSearchError
from mmsearch.library import Library, TextVectors
from mmsearch.search.parse import build
from mmsearch.search.request import MAX_VECTOR_DIMS, Limits, QueryPart, SearchRequest
from mmsearch.search.syntax import parse_query
from mmsearch.settings import load_settings
from mmsearch.web import create_app
from mmsearch.web.openapi import document
from mmsearch.web.openapi_schemas import schemas

from .media import make_collection


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("vectors")
    make_collection(base / "media")
    settings = load_settings({"data_dir": str(base / "data"), "model": "tiny", "batch_size": 8}, env={})
    library = Library(settings)
    library.run_index([base / "media"])
    dims = library.vector_dims()[0]
    return {"library": library, "settings": settings, "dims": dims, "base": base,
            "client": create_app({"TESTING": True, "MMSEARCH": settings}).test_client()}


def ids(response):
    return [hit.id for hit in response.results]


# --- the part ----------------------------------------------------------------------------------------
def test_a_vector_part_keeps_its_numbers_and_is_labelled_vector():
    part = QueryPart("vector", np.array([1, 2, 3], np.float32))
    assert part.value == (1.0, 2.0, 3.0) and part.label == "vector"
    assert QueryPart("vector", np.array([[0.5, -1]])).value == (0.5, -1.0)  # one row of a 2-d array
    assert QueryPart("vector", [1, 2], -0.5).weight == -0.5


@pytest.mark.parametrize("value, fragment", [
    ([], "1 to"), ([0, 0.0, -0.0], "all zeros"), ([1, float("nan")], "finite"), ([float("inf")], "finite"),
    ([10 ** 400], "finite"), ([True, 1], "real numbers"), (["1"], "real numbers"), ("1,2", "list of numbers"),
    (np.ones((2, 2)), "list of numbers"), ([1.0] * (MAX_VECTOR_DIMS + 1), f"1 to {MAX_VECTOR_DIMS}"),
    ([1 + 2j], "real numbers"), (3.0, "list of numbers"),
])
def test_bad_vectors_are_refused(value, fragment):
    with pytest.raises(MMSearchError, match=fragment):
        QueryPart("vector", value)


# --- the query syntax --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("vector:[0.1,-0.2,3]", [("vector", (0.1, -0.2, 3.0), 1.0)]),
    ("vector:[1, +2e-1 , 3E2]", [("vector", (1.0, 0.2, 300.0), 1.0)]),  # spaces and + inside stay the vector's
    ("sea + 0.5:vector:[1,2] - vector:[3, 4]", [("text", "sea", 1.0), ("vector", (1.0, 2.0), 0.5),
                                               ("vector", (3.0, 4.0), -1.0)]),
    ("-2:vector:[1,0]", [("vector", (1.0, 0.0), -2.0)]),
    ('"vector:[1,2]"', [("text", "vector:[1,2]", 1.0)]),  # quoted: words
    ("vector:query.npy", [("text", "vector:query.npy", 1.0)]),  # files are never read here: words
])
def test_inline_vectors_in_the_query_syntax(text, expected):
    assert [(p.kind, p.value, p.weight) for p in parse_query(text)] == expected


@pytest.mark.parametrize("text, fragment", [
    ("vector:[1,2", "no closing ]"), ("vector:[]", "no numbers"), ("vector:[1,,2]", "none missing"),
    ("vector:[1,2]x", "closing ]"), ("vector:[one]", "'one'"), ("vector:[0,0]", "all zeros"),
    ("vector:[1e999]", "finite"), ("vector:[nan]", "'nan'"),
])
def test_bad_inline_vectors_are_errors(text, fragment):
    with pytest.raises(MMSearchError, match=fragment):
        parse_query(text)


def test_a_npy_file_is_a_vector_only_where_files_are_read(tmp_path):
    path = tmp_path / "query.npy"
    np.save(path, np.array([[3, 4]], np.float32))
    parts = parse_query(f"cat + 2:vector:{path}", allow_files=True)
    assert [(p.kind, p.value, p.weight, p.label) for p in parts] == [
        ("text", "cat", 1.0, '"cat"'), ("vector", (3.0, 4.0), 2.0, "query.npy")]
    assert [p.kind for p in parse_query(f"vector:{path}")] == ["text"]


@pytest.mark.parametrize("make, fragment", [
    (lambda d: np.save(d / "v.npy", np.ones((2, 3))), "one vector"),
    (lambda d: np.save(d / "v.npy", np.array(["a", "b"])), "real numbers"),
    (lambda d: np.save(d / "v.npy", np.ones(MAX_VECTOR_DIMS + 1)), f"1 to {MAX_VECTOR_DIMS}"),
    (lambda d: np.save(d / "v.npy", np.zeros(4)), "all zeros"),
    (lambda d: np.save(d / "v.npy", np.array([1, None], dtype=object)), "not a .npy file of numbers"),
    (lambda d: (d / "v.npy").write_text("0.1, 0.2"), "not a .npy file of numbers"),
    (lambda d: np.savez(d / "v.npy", a=np.ones(3)), "npz"),
    (lambda d: None, "no such file"),
])
def test_bad_vector_files_are_errors(tmp_path, make, fragment):
    make(tmp_path)
    target = tmp_path / "v.npy"
    if not target.exists() and (tmp_path / "v.npy.npz").exists():
        (tmp_path / "v.npy.npz").rename(target)
    with pytest.raises(MMSearchError, match=fragment):
        parse_query(f"vector:{target}", allow_files=True)


def test_json_parts_take_lists_of_numbers():
    request = build({"parts": [{"kind": "vector", "value": [1, 2.5], "weight": 2}]})
    assert [(p.kind, p.value, p.weight, p.label) for p in request.parts] == [("vector", (1.0, 2.5), 2.0, "vector")]
    weighted = build({"parts": [{"kind": "vector", "value": [1, 2]}], "weights": [-1]}, limits=Limits())
    assert weighted.parts[0].value == (1.0, 2.0) and weighted.parts[0].weight == -1
    for value, fragment in [("1,2", "list of numbers"), ([], "1 to"), ([1, "2"], r"value\[1\] must be a number"),
                            ([1, True], r"value\[1\]"), ([0, 0], "all zeros"), ([1, float("nan")], "finite"),
                            ([1.0] * (MAX_VECTOR_DIMS + 1), str(MAX_VECTOR_DIMS)), ({"0": 1}, "list")]:
        with pytest.raises(MMSearchError, match=fragment):
            build({"parts": [{"kind": "vector", "value": value}]})
    with pytest.raises(MMSearchError, match="hybrid search needs a text part"):
        build({"parts": [{"kind": "vector", "value": [1, 2]}], "hybrid": True})


# --- the library -------------------------------------------------------------------------------------
def test_a_vector_searches_as_the_text_it_came_from(world):
    library = world["library"]
    text = library.embed_query("text", "red shapes").reshape(-1)
    assert len(text) == world["dims"]
    for fusion in ("early", "rrf", "dbsf"):
        words = library.search(SearchRequest([QueryPart("text", "red shapes")], k=5, fusion=fusion))
        as_vector = library.search(SearchRequest([QueryPart("vector", 3 * text)], k=5, fusion=fusion))
        assert ids(as_vector) == ids(words), fusion
        assert [h.score for h in as_vector.results] == pytest.approx([h.score for h in words.results], abs=1e-5)
        assert as_vector.parts == [{"label": "vector", "kind": "vector", "weight": 1.0}]


def test_vectors_fuse_and_explain_like_other_parts(world):
    library = world["library"]
    sea, red = (library.embed_query("text", t).reshape(-1) for t in ("blue sea", "red"))
    mixed = [QueryPart("text", "blue sea"), QueryPart("vector", red, -0.5)]
    same = [QueryPart("vector", sea), QueryPart("text", "red", -0.5)]
    for fusion in ("early", "rrf", "relative"):
        first = library.search(SearchRequest(mixed, k=6, fusion=fusion, explain=True))
        second = library.search(SearchRequest(same, k=6, fusion=fusion, explain=True))
        assert ids(first) == ids(second), fusion
        assert [p["label"] for p in first.results[0].parts] == ['"blue sea"', "vector"]


def test_embed_query_normalises_vectors(world):
    library, dims = world["library"], world["dims"]
    raw = np.zeros(dims)
    raw[0], raw[1] = 3e300, -4e300  # the squares would overflow; scaled first, they do not
    vector = library.embed_query("vector", raw)
    assert vector.shape == (1, dims) and vector.dtype == np.float32
    assert vector[0, :2] == pytest.approx([0.6, -0.8])
    tiny = library.embed_query("vector", [5e-324] + [0.0] * (dims - 1))
    assert tiny[0, 0] == pytest.approx(1.0)


def test_the_wrong_dimension_is_refused_naming_the_right_one(world):
    library, dims = world["library"], world["dims"]
    calls = []
    request = SearchRequest([QueryPart("text", "x"), QueryPart("vector", [1.0] * (dims + 1))])
    with pytest.raises(MMSearchError, match=f"query part 2 \\(a vector\\) has {dims + 1} numbers, not {dims}"):
        library.search(request, lambda kind, value: calls.append(kind))
    assert calls == []  # refused before anything was embedded
    with pytest.raises(MMSearchError, match=f"{dims} dimensions"):
        library.embed_query("vector", [1.0, 2.0])


def test_a_fresh_data_dir_takes_the_configured_models_dimension(tmp_path, world):
    library = Library(load_settings({"data_dir": str(tmp_path / "empty"), "model": "tiny"}, env={}))
    assert library.vector_dims()[0] == world["dims"]
    assert library.search(SearchRequest([QueryPart("vector", [1.0] * world["dims"])])).results == []


# --- the API and the spec ----------------------------------------------------------------------------
def test_the_api_searches_by_vector(world):
    client, library = world["client"], world["library"]
    vector = library.embed_query("text", "green").reshape(-1).tolist()
    body = client.post("/api/search", json={"parts": [{"kind": "vector", "value": vector}], "k": 4,
                                            "explain": True}).get_json()
    words = client.post("/api/search", json={"text": "green", "k": 4}).get_json()
    assert [r["id"] for r in body["results"]] == [r["id"] for r in words["results"]]
    assert body["parts"][0]["label"] == "vector"
    got = client.get("/api/search", query_string={"q": "vector:[" + ",".join(map(str, vector)) + "]", "k": 4})
    assert got.status_code == 200 and [r["id"] for r in got.get_json()["results"]] == [r["id"] for r in
                                                                                        words["results"]]


@pytest.mark.parametrize("value, fragment", [
    (lambda dims: [1.0] * (dims - 1), "not {dims}"), (lambda dims: [0] * dims, "all zeros"),
    (lambda dims: [1, "a"], "parts[0].value[1] must be a number"), (lambda dims: [], "1 to"),
    (lambda dims: [1] * (MAX_VECTOR_DIMS + 1), str(MAX_VECTOR_DIMS)), (lambda dims: "1,2", "list of numbers"),
])
def test_the_api_refuses_bad_vectors_with_a_400(world, value, fragment):
    dims = world["dims"]
    response = world["client"].post("/api/search", json={"parts": [{"kind": "vector", "value": value(dims)}]})
    assert response.status_code == 400, response.data[:300]
    error = response.get_json()["error"]
    assert error["code"] == "bad_request" and fragment.format(dims=dims) in error["message"], error


def test_the_spec_describes_vector_parts(world):
    part = document("", world["settings"])["components"]["schemas"]["Part"]
    assert "vector" in part["properties"]["kind"]["enum"]
    vector = next(b for b in part["oneOf"] if b["properties"]["kind"] == {"const": "vector"})["properties"]["value"]
    assert (vector["minItems"], vector["maxItems"], vector["items"]) == (1, MAX_VECTOR_DIMS, {"type": "number"})
    served = schemas(Limits(), vector_dims=world["dims"])["Part"]["oneOf"][-1]["properties"]["value"]
    assert served["minItems"] == served["maxItems"] == world["dims"]


# --- the text cache ----------------------------------------------------------------------------------
def counting(library, monkeypatch) -> list:
    encoder, calls = library.encoder(), []
    original = encoder.encode_texts
    monkeypatch.setattr(encoder, "encode_texts", lambda texts: calls.append(list(texts)) or original(texts))
    return calls


def test_a_repeated_text_query_skips_the_encoder(world, monkeypatch, tmp_path):
    library = Library(world["settings"])
    calls = counting(library, monkeypatch)
    first = library.embed_query("text", "a calm sea")
    again = library.embed_query("text", "a calm sea")
    assert calls == [["a calm sea"]] and np.array_equal(first, again)
    first[:] = 0  # a caller's copy: the cache keeps its own
    assert np.array_equal(library.embed_query("text", "a calm sea"), again)
    library.embed_query("text", "a calm sea ")  # the exact text is the key
    library.search(SearchRequest([QueryPart("text", "a calm sea")]))
    assert calls == [["a calm sea"], ["a calm sea "]]


def test_size_zero_keeps_nothing(world, monkeypatch):
    library = Library(world["settings"].replace(query_cache_size=0))
    calls = counting(library, monkeypatch)
    for _ in range(3):
        library.embed_query("text", "pine trees")
    assert len(calls) == 3 and len(library.text_vectors) == 0


def test_the_cache_is_bounded_least_recently_used_first():
    cache, made = TextVectors(2), []

    def make(key):
        return lambda: made.append(key) or np.full((1, 2), len(made), np.float32)
    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get(key, make(key))
    assert made == ["a", "b", "c", "b"] and len(cache) == 2  # c pushed out b (a was used more recently)


def test_another_data_dir_or_model_never_shares_entries(world, monkeypatch, tmp_path):
    one = Library(world["settings"])
    other = Library(world["settings"].replace(data_dir=str(tmp_path / "other")))
    calls_one, calls_other = counting(one, monkeypatch), counting(other, monkeypatch)
    one.embed_query("text", "sunset")
    other.embed_query("text", "sunset")
    assert calls_one == [["sunset"]] and calls_other == [["sunset"]]
    spec = one.models.spec()
    monkeypatch.setattr(one.models, "_spec", type(spec)(spec.name, "another", spec.dim))  # another model, same size
    one.embed_query("text", "sunset")
    assert calls_one == [["sunset"], ["sunset"]]


def test_the_cache_is_safe_across_threads(world):
    library = Library(world["settings"].replace(query_cache_size=3))
    texts = [f"word {n}" for n in range(5)]
    want = {t: library.embed_query("text", t) for t in texts}
    wrong, start = [], threading.Barrier(8)

    def run(seed):
        start.wait()
        for n in range(60):
            text = texts[(seed + n * 3) % len(texts)]
            if not np.array_equal(library.embed_query("text", text), want[text]):
                wrong.append(text)
    threads = [threading.Thread(target=run, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == [] and len(library.text_vectors) <= 3
