"""Tags as stored data (issue #15 part): tag sets and their tags in SQL (store.tags: replace, of, sets, get,
delete, refusals that write nothing), the tags filter inside the vector search (only tagged items, k kept when k
exist, every other filter composed with it, tag_set), on SQLite and PostgreSQL; tags in results, in the CLI and
the API (filters.tags, GET /api/tags), in the full-text index of hybrid search, and revision 0004 on a database
at 0003."""
from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import time
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text

from mmsearch.errors import MMSearchError
from mmsearch.library import Library
from mmsearch.search import lexical, schema
from mmsearch.search.request import Filters, QueryPart, SearchRequest
from mmsearch.search.store import Store
from mmsearch.search.tables import OK, Item, TagRow
from mmsearch.search.tags import Tag
from mmsearch.settings import load_settings

DIM = 64  # the tiny model's
TINY = {"mmsearch_model": json.dumps({"dim": DIM, "name": "tiny", "pretrained": "random"}),
        "mmsearch_model_source": json.dumps({"name": "tiny", "pretrained": "random"}),
        "mmsearch_audio_key": json.dumps("audio/random-tiny")}
N = 30
MODALITIES = ("image", "audio", "text")
DAY0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
# What the world's items are tagged with: set -> item number -> label -> score. "dog" on 12 of the 30 in
# animals, and on two more in scenes; the vector search alone ranks every untagged item above every tagged one.
DOGS = [i for i in range(N) if i % 5 in (1, 3)]
TAGS = {
    "animals": {i: {"dog": 0.9 - i / 100, **({"cat": 0.3} if i % 5 == 1 else {})} for i in DOGS},
    "scenes": {i: {"beach": 0.6, **({"dog": 0.2} if i in (0, 9) else {})} for i in range(N) if i % 3 == 0},
}


def new_item(path: str, modality: str = "image", **columns) -> Item:
    return Item(path=path, modality=modality, size=1, mtime_ns=0, status=OK, indexed_at=dt.datetime(2024, 1, 1),
                **columns)


@pytest.fixture
def store(db_url) -> Store:
    store = Store(db_url)
    with store.session() as session:
        session.add_all(new_item(f"/p/{i}.jpg") for i in range(1, 7))
    return store


def everything(store: Store) -> tuple:
    """What a refused write must leave as it was: the sets, every item's tags and words for full-text search."""
    with store.session() as session:
        terms = session.execute(select(Item.id, Item.tag_terms).order_by(Item.id)).all()
    return [s._replace(updated_at=None) for s in store.tags.sets()], store.tags.of(range(1, 100)), terms, \
        [s.updated_at for s in store.tags.sets()]


# --- the store: replace, of, sets, get, delete -------------------------------------------------------------
def test_replace_of_sets_get_and_delete(store):
    tags = store.tags
    assert tags.sets() == [] and tags.get("animals") is None and tags.of([1, 2]) == {}
    config = {"model": "tiny", "labels": ["dog", "cat", "bird"], "top": 2, "prompt": "a photo of a {}"}
    rows = [(1, "dog", 0.91), (1, "cat", 0.4), (2, "cat", 0.8), (3, "dog", 0.55), (3, "bird", 0.1)]
    assert tags.replace("animals", "zero-shot", config, iter(rows)) == 5
    assert tags.replace("colours", "trained", {"head": "colours.safetensors"}, [(1, "brown", 0.7), (4, "dog", 0.3)]) == 2
    animals = tags.get("animals")
    assert (animals.name, animals.kind, animals.config, animals.items) == ("animals", "zero-shot", config, 3)
    assert list(animals.labels.items()) == [("cat", 2), ("dog", 2), ("bird", 1)]  # most common, then by label
    assert isinstance(animals.updated_at, dt.datetime)
    assert [s.name for s in tags.sets()] == ["animals", "colours"]
    assert tags.of([1, 2, 3, 4, 5, 99]) == {
        1: [Tag("animals", "dog", 0.91), Tag("colours", "brown", 0.7), Tag("animals", "cat", 0.4)],  # best first
        2: [Tag("animals", "cat", 0.8)], 3: [Tag("animals", "dog", 0.55), Tag("animals", "bird", 0.1)],
        4: [Tag("colours", "dog", 0.3)]}

    # items given: only those items' tags of this set are replaced (new items tagged after an index run)
    assert tags.replace("animals", "zero-shot", config, [(2, "dog", 0.6), (5, "bird", 0.9)], items=[2, 5, 6]) == 2
    assert tags.of([2, 5, 6]) == {2: [Tag("animals", "dog", 0.6)], 5: [Tag("animals", "bird", 0.9)]}
    assert tags.of([1])[1][0] == Tag("animals", "dog", 0.91) and tags.get("animals").items == 4
    # items None: the set's tags are exactly the rows afterwards; the kind and config change with them
    assert tags.replace("animals", "trained", {"v": 2}, [(6, "dog", 0.5)]) == 1
    assert tags.get("animals")[1:5] == ("trained", {"v": 2}, 1, {"dog": 1})
    assert tags.of([1, 2, 3, 5, 6]) == {1: [Tag("colours", "brown", 0.7)], 6: [Tag("animals", "dog", 0.5)]}
    assert tags.replace("animals", "trained", {"v": 2}, []) == 0  # a set may be empty
    assert tags.get("animals").items == 0 and tags.get("animals").labels == {}

    assert tags.delete("colours") is True and tags.delete("colours") is False
    assert [s.name for s in tags.sets()] == ["animals"] and tags.of([1, 4]) == {}
    with store.session() as session:  # the words for full-text search follow every change
        assert session.execute(select(Item.tag_terms).where(Item.tag_terms.is_not(None))).all() == []


def test_an_items_tag_terms_are_its_labels_best_first_each_once(store):
    store.tags.replace("a", "zero-shot", {}, [(1, "dog", 0.2), (1, "golden retriever", 0.9)])
    store.tags.replace("b", "trained", {}, [(1, "dog", 0.5), (2, "cat", 0.5)])
    with store.session() as session:
        assert dict(session.execute(select(Item.id, Item.tag_terms).where(Item.id.in_([1, 2, 3]))).all()) == {
            1: "golden retriever dog", 2: "cat", 3: None}


REFUSED = [
    ("name", "", "set name"), ("name", " ", "set name"), ("name", "x" * 201, "at most 200"), ("name", "a\nb", "control"),
    ("name", None, "set name"), ("kind", "supervised", "kind"), ("config", ["x"], "config"),
    ("config", {"x": float("nan")}, "JSON"), ("config", {"x": object()}, "JSON"),
    ("row", (1, "", 0.5), "row 2: a tag label"), ("row", (1, "x" * 201, 0.5), "at most 200"),
    ("row", (1, "tab\tbed", 0.5), "control"), ("row", (1, "nul\x00", 0.5), "control"),
    ("row", (1, "del\x7f", 0.5), "control"), ("row", (1, "\ud800", 0.5), "control"), ("row", (1, 7, 0.5), "label"),
    ("row", (1, "dog", float("nan")), "finite"), ("row", (1, "dog", float("inf")), "finite"),
    ("row", (1, "dog", "0.5"), "finite"), ("row", (1, "dog", True), "finite"), ("row", (99, "dog", 0.5), "no item with id 99"),
    ("row", (0, "dog", 0.5), "positive integer"), ("row", ("1", "dog", 0.5), "positive integer"),
    ("row", (1, "dog"), "row 2 must be"), ("row", (1, "cat", 0.3), "label 'cat' twice"),
    ("items", [1, 99], "no item with id 99"), ("items", [2], "not among the items"),
]


@pytest.mark.parametrize("what, value, message", REFUSED, ids=range(len(REFUSED)))
def test_a_refused_replace_writes_nothing(store, what, value, message):
    store.tags.replace("animals", "zero-shot", {"v": 1}, [(1, "cat", 0.2), (2, "dog", 0.7)])
    store.tags.replace("other", "trained", {}, [(3, "cow", 0.4)])
    before = everything(store)
    args = {"name": "animals", "kind": "zero-shot", "config": {"v": 2}, "rows": [(1, "cat", 0.3)], "items": None}
    if what == "row":
        args["rows"] = [(1, "cat", 0.3), value]
    elif what == "items":
        args["rows"] = [(1, "cat", 0.3)]
        args["items"] = value
    else:
        args[what] = value
    with pytest.raises(MMSearchError, match=message):
        store.tags.replace(args["name"], args["kind"], args["config"], args["rows"], items=args["items"])
    assert everything(store) == before


def test_a_bad_row_deep_in_a_long_stream_writes_nothing(store):
    store.tags.replace("animals", "zero-shot", {}, [(1, "cat", 0.2)])
    before = everything(store)

    def rows():
        for n in range(30_000):
            yield 1 + n % 6, f"label{n}", 0.5
        yield 1, "late", float("nan")
    with pytest.raises(MMSearchError, match="tag row 30001: a tag's score must be a finite number"):
        store.tags.replace("animals", "zero-shot", {}, rows())
    assert everything(store) == before


def test_a_hundred_thousand_rows_stream_in(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with store.session() as session:
        session.add_all(new_item(f"/p/{i}.jpg") for i in range(2_000))
    labels = [f"label {n}" for n in range(50)]
    started = time.perf_counter()
    written = store.tags.replace("many", "zero-shot", {}, ((i, label, 1 - n / 50) for i in range(1, 2_001)
                                                          for n, label in enumerate(labels)))
    seconds = time.perf_counter() - started
    print(f"100k tags in {seconds:.2f}s")
    assert written == 100_000 and seconds < 60
    many = store.tags.get("many")
    assert many.items == 2_000 and len(many.labels) == 50 and set(many.labels.values()) == {2_000}
    assert [t.label for t in store.tags.of([7])[7][:2]] == ["label 0", "label 1"]
    assert len(store.lexical('"label 49"', 5000)) == 2_000
    with store.session() as session:  # the FTS5 index agrees with the items
        assert lexical.problems(session, "sqlite") == []


def test_deleting_an_item_deletes_its_tags(store):
    store.tags.replace("animals", "zero-shot", {}, [(1, "dog", 0.9), (2, "dog", 0.8), (3, "cat", 0.7)])
    assert store.remove_ids([1]) == 1
    with store.session() as session:
        session.delete(session.get(Item, 3))
    with store.session() as session:
        assert session.execute(select(TagRow.item_id, TagRow.label)).all() == [(2, "dog")]
    assert store.tags.get("animals").labels == {"dog": 1}


def test_the_tags_filter_selects_ids(store):
    store.tags.replace("animals", "zero-shot", {}, [(1, "dog", 0.9), (1, "cat", 0.2), (2, "dog", 0.8), (3, "cat", 0.7)])
    store.tags.replace("scenes", "trained", {}, [(4, "dog", 0.5), (5, "beach", 0.5), (1, "beach", 0.1)])

    def ids(**filters) -> list[int]:
        return sorted(store.filter_ids(Filters(**filters)).tolist())
    assert ids(tags=["dog"]) == [1, 2, 4] and ids(tags="dog") == [1, 2, 4]
    assert ids(tags=["dog", "cat"]) == [1] and ids(tags=["dog", "beach"]) == [1]  # every label, any set
    assert ids(tags=["dog"], tag_set="animals") == [1, 2] and ids(tags=["dog", "beach"], tag_set="scenes") == []
    assert ids(tag_set="scenes") == [1, 4, 5] and ids(tag_set="nothing") == [] and ids(tags=["Dog"]) == []
    assert Filters(tags=["dog"]).active and Filters(tag_set="x").active and not Filters(tags=[]).active
    for bad in ({"tags": [""]}, {"tags": [3]}, {"tags": ["x"] * 33}, {"tag_set": ""}, {"tag_set": 5}):
        with pytest.raises(MMSearchError):
            Filters(**bad)


# --- a library of 30 items with known vectors, on SQLite and PostgreSQL ----------------------------------
def item_path(i: int) -> str:
    return f"/lib/{'a' if i < 15 else 'b'}/item{i:02d}.{('jpg', 'wav', 'txt')[i % 3]}"


def vectors() -> np.ndarray:
    """Item i: similarity to the query e0 of 0.95 − i/1000 when untagged by dog, 0.5 − i/1000 when tagged."""
    out = np.zeros((N, DIM), np.float32)
    for i in range(N):
        similarity = (0.5 if i in DOGS else 0.95) - i / 1000
        out[i, 0], out[i, 1 + i] = similarity, math.sqrt(1 - similarity ** 2)
    return out


QUERY = tuple([1.0] + [0.0] * (DIM - 1))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("tags")
    env = {"MMSEARCH_DATA_DIR": str(base / "data"), "MMSEARCH_MODEL": "tiny"}
    if request.param == "postgresql":
        env["MMSEARCH_DB_URL"] = request.getfixturevalue("postgres").new_database()
    table = pa.table({
        "path": [item_path(i) for i in range(N)], "modality": [MODALITIES[i % 3] for i in range(N)],
        "vector": pa.array(list(vectors()), pa.list_(pa.float32())),
        "mtime": pa.array([DAY0 + dt.timedelta(days=i) for i in range(N)], pa.timestamp("us", tz="UTC")),
        "taken_at": pa.array([dt.datetime(2023, 6, 1) + dt.timedelta(days=N - i) for i in range(N)], pa.timestamp("us")),
        "size": [1000 + 100 * i for i in range(N)],
        "caption": [f"caption number {i}" if i % 2 == 0 else None for i in range(N)],
        "text": [f"a note numbered {i}" if i % 3 == 2 else None for i in range(N)]}).replace_schema_metadata(TINY)
    pq.write_table(table, base / "world.parquet")
    from mmsearch.cli import cli
    result = CliRunner().invoke(cli, ["import", str(base / "world.parquet"), "--json"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    settings = load_settings({"data_dir": env["MMSEARCH_DATA_DIR"], "db_url": env.get("MMSEARCH_DB_URL", "")}, env={})
    library = Library(settings)
    ids = {row[1]: row[0] for row in library.store.index_rows()}
    number = {ids[item_path(i)]: i for i in range(N)}
    for name, tagged in TAGS.items():
        rows = [(ids[item_path(i)], label, score) for i, labels in tagged.items() for label, score in labels.items()]
        library.store.tags.replace(name, "zero-shot" if name == "animals" else "trained", {"labels": name}, rows)
    yield {"library": library, "settings": settings, "env": env, "number": number, "base": base,
           "id": {i: ids[item_path(i)] for i in range(N)}}
    library.store.engine.dispose()


def found(world, k: int = 10, text: str | None = None, hybrid: bool = False, **filters) -> list[int]:
    """The item numbers a search by the query vector (and ``text``) returns, best first."""
    parts = [QueryPart("vector", QUERY)] + ([QueryPart("text", text)] if text else [])
    request = SearchRequest(parts, k=k, filters=Filters(**filters), hybrid=hybrid)
    return [world["number"][hit.id] for hit in world["library"].search(request).results]


def labels_of(i: int, tag_set: str | None = None) -> set[str]:
    return {label for name, tagged in TAGS.items() if tag_set in (None, name) for label in tagged.get(i, {})}


def test_the_tag_filter_keeps_k_results_when_k_exist(world):
    assert not set(found(world)) & set(DOGS)  # the vectors alone rank every item DOGS leaves out first
    animals = found(world, k=10, tags=["dog"], tag_set="animals")
    assert animals == DOGS[:10]
    dogs = found(world, k=10, tags=["dog"])
    assert len(dogs) == 10 and all("dog" in labels_of(i) for i in dogs)
    assert dogs == sorted(dogs, key=lambda i: (i not in (0, 9), i))  # 0 and 9 (dog in scenes) rank first
    assert sorted(found(world, k=30, tags=["dog"])) == sorted(DOGS + [0, 9])
    assert sorted(found(world, k=30, tags=["dog"], tag_set="animals")) == DOGS
    assert sorted(found(world, k=30, tags=["dog", "cat"])) == [i for i in DOGS if i % 5 == 1]
    assert sorted(found(world, k=30, tag_set="scenes")) == sorted(TAGS["scenes"])
    assert found(world, k=5, tags=["wolf"]) == []
    with pytest.raises(MMSearchError, match="no tag set 'nothing'; the tag sets are 'animals', 'scenes'"):
        found(world, k=30, tags=["dog"], tag_set="nothing")  # an unknown set is an error, not an empty page


DAY = dt.timedelta(days=1)
OTHER_FILTERS = [
    ({"modalities": ["image"]}, lambda i: MODALITIES[i % 3] == "image"),
    ({"modalities": ["audio", "text"]}, lambda i: MODALITIES[i % 3] != "image"),
    ({"path_prefix": "/lib/b/"}, lambda i: i >= 15),
    ({"path_glob": "*/a/item1*"}, lambda i: 10 <= i < 15),
    ({"date_from": DAY0 + 10 * DAY, "date_to": DAY0 + 25 * DAY}, lambda i: 10 <= i <= 25),
    ({"date_field": "taken_at", "date_from": dt.datetime(2023, 6, 1) + 20 * DAY}, lambda i: N - i >= 20),
    ({"min_size": 2000, "max_size": 3500}, lambda i: 10 <= i <= 25),
    ({"has_caption": True}, lambda i: i % 2 == 0),
    ({"has_caption": False}, lambda i: i % 2 == 1),
    ({"tag_set": "animals"}, lambda i: "dog" in labels_of(i, "animals")),
    ({"modalities": ["image", "text"], "path_prefix": "/lib/a/", "has_caption": False, "min_size": 1100},
     lambda i: i % 3 != 1 and i < 15 and i % 2 == 1 and i >= 1),
]


@pytest.mark.parametrize("other, keeps", OTHER_FILTERS, ids=[" ".join(f) for f, _ in OTHER_FILTERS])
def test_the_tag_filter_composes_with_every_other_filter(world, other, keeps):
    expected = sorted(i for i in range(N) if keeps(i) and "dog" in labels_of(i, other.get("tag_set")))
    assert expected, "a test that keeps nothing proves nothing"
    assert sorted(found(world, k=30, tags=["dog"], **other)) == expected
    top = found(world, k=3, tags=["dog"], **other)
    assert len(top) == min(3, len(expected)) and set(top) <= set(expected)


def test_the_cli_filters_by_tags_and_shows_them(world, tmp_path):
    from mmsearch.cli import cli
    query = tmp_path / "query.npy"
    np.save(query, np.asarray(QUERY, np.float32))

    def search(*args: str):
        result = CliRunner().invoke(cli, ["search", f"vector:{query}", *args], env=world["env"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout
    document = json.loads(search("--tag", "dog", "--tag-set", "animals", "-k", "4", "--json"))
    results = document["results"]
    assert [world["number"][r["id"]] for r in results] == DOGS[:4]
    first = world["number"][results[0]["id"]]
    assert results[0]["tags"] == [{"set": "animals", "label": "dog", "score": pytest.approx(0.9 - first / 100)},
                                  {"set": "animals", "label": "cat", "score": pytest.approx(0.3)}]
    both = json.loads(search("--tag", "dog", "--tag", "beach", "-k", "30", "--json"))["results"]
    assert sorted(world["number"][r["id"]] for r in both) == [0, 3, 6, 9, 18, 21] and \
        all({t["label"] for t in r["tags"]} >= {"dog", "beach"} for r in both)
    untagged = json.loads(search("-k", "1", "--no-caption", "--json"))["results"][0]
    assert world["number"][untagged["id"]] == 5 and not labels_of(5)
    assert "tags" not in untagged  # an item without tags has no "tags"
    lines = search("--tag", "dog", "--tag-set", "animals", "-k", "1").splitlines()
    assert lines[0].split()[1:3] == [str(world["id"][1]), "audio"] and DOGS[0] == 1
    assert lines[-1] == f"        tags: dog (animals {0.9 - DOGS[0] / 100:.2f}), cat (animals 0.30)"  # label (set score)
    both_sets = search("--tag", "dog", "--tag", "beach", "-k", "1").splitlines()
    assert both_sets[-1] == "        tags: beach (scenes 0.60), dog (scenes 0.20)"


def test_a_tag_label_is_found_by_hybrid_search(world):
    store, zebra = world["library"].store, world["id"][29]  # ranked last by the vector alone
    store.tags.replace("stripes", "zero-shot", {}, [(zebra, "zebra", 0.8)])
    try:
        assert [i for i, _ in store.lexical("zebra", 5)] == [zebra]
        assert found(world, k=3)[-1] != 29 and found(world, k=3, text="zebra", hybrid=True)[0] == 29
        assert found(world, k=3, text="zebra", hybrid=True, tags=["zebra"]) == [29]
        assert not [p for p in world["library"].verify() if "full-text" in p]  # FTS5 agrees with the items
    finally:
        store.tags.delete("stripes")
    assert store.lexical("zebra", 5) == []


def test_the_api_filters_by_tags_and_lists_the_sets(world):
    from mmsearch.web import create_app
    client = create_app({"TESTING": True, "MMSEARCH": world["settings"]}).test_client()
    body = {"parts": [{"kind": "vector", "value": list(QUERY)}], "k": 5, "filters": {"tags": ["dog"],
                                                                                    "tag_set": "animals"}}
    results = client.post("/api/search", json=body).get_json()["results"]
    assert [world["number"][r["id"]] for r in results] == DOGS[:5]
    assert all(r["tags"][0]["label"] == "dog" and r["tags"][0]["set"] == "animals" for r in results)
    one = client.post("/api/search", json={**body, "filters": {"tags": "cat"}}).get_json()["results"]
    assert sorted(world["number"][r["id"]] for r in one) == [1, 6, 11, 16, 21]
    vector = ",".join(map(str, QUERY))
    flat = client.get(f"/api/search?q=vector:[{vector}]&tags=dog&tags=cat&k=30&modality=image").get_json()
    assert sorted(world["number"][r["id"]] for r in flat["results"]) == [6, 21]
    for bad in ({"tags": [""]}, {"tags": 3}, {"tags": [["dog"]]}, {"tags": ["x"] * 33}, {"tag_set": ""},
                {"tag_set": ["animals"]}, {"tags": ["x" * 201]}, {"tags": ["nul\x00"]}):
        response = client.post("/api/search", json={**body, "filters": bad})
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request", bad
    item = client.get(f"/api/items/{world['id'][1]}").get_json()
    assert item["tags"] == [{"set": "animals", "label": "dog", "score": pytest.approx(0.89)},
                            {"set": "animals", "label": "cat", "score": pytest.approx(0.3)}]
    assert "tags" not in client.get(f"/api/items/{world['id'][4]}").get_json()
    document = client.get("/api/tags").get_json()
    assert [(s["name"], s["kind"], s["items"]) for s in document["sets"]] == [("animals", "zero-shot", 12),
                                                                              ("scenes", "trained", 10)]
    assert document["sets"][0]["labels"] == [{"label": "dog", "count": 12}, {"label": "cat", "count": 6}]
    assert document["sets"][1]["labels"] == [{"label": "beach", "count": 10}, {"label": "dog", "count": 2}]
    assert dt.datetime.fromisoformat(document["sets"][0]["updated_at"]).tzinfo is not None
    assert set(document) == {"sets"} and set(document["sets"][0]) == {"name", "kind", "items", "updated_at", "labels"}


def test_an_unknown_tag_set_is_an_error_naming_the_sets(world, tmp_path):
    """search and evaluate on the command line (one line, exit 1; one JSON document with --json) and
    /api/search (a 404 JSON error, as for a tag set /api/classify does not know): an unknown --tag-set is named with the sets there are, never an empty list."""
    from mmsearch.cli import cli
    from mmsearch.web import create_app
    query = tmp_path / "query.npy"
    np.save(query, np.asarray(QUERY, np.float32))
    queries = tmp_path / "queries.csv"
    queries.write_text(f"query,relevant\nvector:{query},{item_path(1)}\n")
    wanted = "no tag set 'nope'; the tag sets are 'animals', 'scenes'"
    for args in (["search", f"vector:{query}", "--tag-set", "nope"], ["evaluate", str(queries), "--tag-set", "nope"],
                 ["evaluate", str(queries), "--compare", "--tag-set nope"]):
        plain = CliRunner().invoke(cli, args, env=world["env"], catch_exceptions=False)
        assert plain.exit_code == 1 and plain.stdout == "" and plain.stderr == f"error: {wanted}\n", plain.output
        as_json = CliRunner().invoke(cli, [*args, "--json"], env=world["env"], catch_exceptions=False)
        assert as_json.exit_code == 1 and json.loads(as_json.stdout)["error"] == {"code": "not_found", "message": wanted}
    client = create_app({"TESTING": True, "MMSEARCH": world["settings"]}).test_client()
    body = {"parts": [{"kind": "vector", "value": list(QUERY)}], "filters": {"tag_set": "nope"}}
    response = client.post("/api/search", json=body)
    assert response.status_code == 404 and response.get_json() == {"error": {"code": "not_found", "message": wanted}}
    known = client.post("/api/search", json={**body, "filters": {"tag_set": "scenes"}})
    assert known.status_code == 200 and known.get_json()["results"]


def test_tags_json_writes_updated_at_as_the_api_does(world):
    from mmsearch.cli import cli
    from mmsearch.web import create_app
    listed = CliRunner().invoke(cli, ["tags", "--json"], env=world["env"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    client = create_app({"TESTING": True, "MMSEARCH": world["settings"]}).test_client()
    assert document == client.get("/api/tags").get_json()
    stamp = dt.datetime.fromisoformat(document["sets"][0]["updated_at"])
    assert "T" in document["sets"][0]["updated_at"] and stamp.utcoffset() == dt.timedelta(0)  # ISO 8601, UTC


def _evaluate_labels(world, tmp_path, rows: str, *args: str):
    from mmsearch.cli import cli
    labels = tmp_path / "labels.csv"
    labels.write_text(rows)
    return CliRunner().invoke(cli, ["evaluate", "--labels", str(labels), *args], env=world["env"],
                              catch_exceptions=False)


def test_evaluate_labels_shows_a_confusion_matrix_whose_columns_are_explained(world, tmp_path):
    # items 1, 3, 6, 8 are tagged dog (best) by animals; labelled dog, dog, cat, dog
    rows = "path,label\n" + "".join(f"{item_path(i)},{label}\n" for i, label in ((1, "dog"), (3, "dog"), (6, "cat"),
                                                                                   (8, "dog")))
    result = _evaluate_labels(world, tmp_path, rows, "--set", "animals")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("confusion"))
    assert "rows are the labels, columns the tags" in lines[at] and "column N is the label of row N" in lines[at]
    assert lines[at + 1].split() == ["0", "1"]
    assert [line.split() for line in lines[at + 2:]] == [["0", "dog", "3", "0"], ["1", "cat", "1", "0"]]


def test_evaluate_labels_reads_the_file_before_asking_for_the_set(world, tmp_path):
    from mmsearch.cli import cli
    missing = tmp_path / "missing.csv"
    result = CliRunner().invoke(cli, ["evaluate", "--labels", str(missing)], env=world["env"], catch_exceptions=False)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: cannot read {missing}: "), result.output
    good = _evaluate_labels(world, tmp_path, f"{item_path(1)},dog\n{item_path(6)},cat\n")  # a good file: now --set
    assert good.exit_code == 1 and "name the tag set to evaluate with --set: animals, scenes" in good.stderr


# --- revision 0004 ---------------------------------------------------------------------------------------
def test_a_database_at_0003_upgrades_and_tags_join_the_full_text_index(db_url):
    engine = create_engine(db_url)
    with engine.begin() as connection:
        command.upgrade(schema.alembic_config(connection), "0003")
        connection.execute(text("INSERT INTO items (path, modality, size, mtime_ns, status, indexed_at, caption) "
                                "VALUES ('/p/MyPhoto.jpg', 'image', 1, 0, 'ok', '2024-01-01 00:00:00', 'a calm sea')"))
    engine.dispose()
    with pytest.raises(Exception, match="run 'mmsearch migrate' first"):
        Store(db_url)
    store = Store(db_url, migrate=True)
    assert (store.schema_change.before, store.schema_change.after) == ("0003", "0004") and schema.HEAD == "0004"
    assert [i for i, _ in store.lexical("calm photo", 5)] == [1]  # what 0003 indexed is indexed still
    assert store.lexical("okapi", 5) == []
    store.tags.replace("animals", "zero-shot", {}, [(1, "okapi", 0.7)])
    assert [i for i, _ in store.lexical("okapi", 5)] == [1] and store.filter_ids(Filters(tags=["okapi"])).tolist() == [1]
    with store.session() as session:  # the FTS5 index agrees with the items
        assert lexical.problems(session, store.engine.dialect.name) == []
    store.engine.dispose()
    engine = create_engine(db_url)
    with engine.begin() as connection:  # and down again: 0003's index, without the labels
        command.downgrade(schema.alembic_config(connection), "0003")
    engine.dispose()
    store = Store(db_url, migrate=True)
    assert store.tags.sets() == [] and store.lexical("okapi", 5) == [] and len(store.lexical("calm", 5)) == 1


def test_revision_0004_keeps_the_sqlite_full_text_triggers(tmp_path):
    db = tmp_path / "db.sqlite"
    Store(f"sqlite:///{db}").engine.dispose()
    with sqlite3.connect(db) as connection:
        triggers = dict(connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
        table = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'items_fts'").fetchone()[0]
    assert sorted(triggers) == ["items_fts_delete", "items_fts_insert", "items_fts_update"]
    assert all("tag_terms" in sql for sql in triggers.values()) and "tag_terms" in table
