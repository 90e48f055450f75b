"""Many vectors per item (issue #12): passages of long notes, segments of long sounds, the content of a
captioned file; an item scores its best-matching vector, and every result says what matched."""
from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import threading

import numpy as np
import pytest

from mmsearch.library import Library
from mmsearch.search.index_sync import sync
from mmsearch.search.query import Searcher
from mmsearch.search.request import QueryPart, SearchRequest
from mmsearch.search.store import Store
from mmsearch.search.tables import OK, Item, Vector, vector_bytes
from mmsearch.search.partitioned import Partitioned
from mmsearch.search.index_types import IndexState
from mmsearch.search.milvus_index import FACTORY as MILVUS, MilvusIndex, collection, connect
from mmsearch.search.vector_index import FaissIndex


DIM = 4
KEY = "test/enc"
WEIGHTS = '{"audio": 1.0, "image": 1.0, "text": 1.0}'


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def put_item(store: Store, item_id: int, modality: str, vectors: list[tuple[int, str, np.ndarray]],
             text: str | None = None, caption: str | None = None, duration: float | None = None) -> None:
    with store.session() as session:
        generation = store.bump_generation(session)
        session.add(Item(id=item_id, path=f"/m/{item_id}.{modality}", modality=modality, size=1, mtime_ns=1,
                         status=OK, indexed_at=dt.datetime(2026, 1, 1), text=text, caption=caption,
                         duration=duration, layout=2))
        session.flush()
        for slot, kind, vector in vectors:
            span = (0.0, 4.0) if kind in ("passage", "segment") else (None, None)
            session.add(Vector(item_id=item_id, slot=slot, kind=kind, span_start=span[0], span_end=span[1],
                               encoder=KEY, dim=DIM, data=vector_bytes(vector), generation=generation))


@pytest.fixture(params=["faiss", "milvus-lite"])
def exact(request, tmp_path):
    """How searcher() makes each modality's exact part: (its index type, a maker): FAISS Flat, or a Milvus
    FLAT collection in milvus-lite. The aggregation pinned by hand below holds on both."""
    if request.param == "faiss":
        return "Flat", FaissIndex
    client = connect(str(tmp_path / "vectors.db"))
    return MILVUS, lambda state: MilvusIndex.create(client, state, collection("test", state.space))


def searcher(store: Store, exact) -> Searcher:
    factory, new = exact
    parts = {m: sync(None, store, IndexState(0, KEY, DIM, factory, WEIGHTS, m, "vector"), new)[0]
             for m in ("image", "text", "audio")}
    return Searcher(store, Partitioned(parts, IndexState(store.generation(), KEY, DIM, factory, WEIGHTS, ids="vector")))


@pytest.fixture
def hand_made(db_url):
    """Item 1 (a note) has three vectors whose scores for the query q = e0 are known: content 0.6, and two
    passages 0.8 and 0.1; item 2 (an image) one vector at 0.7; item 3 (a captioned image) content 0.2 and a
    caption at 0.75."""
    store = Store(db_url)
    q = unit(1, 0, 0, 0)
    put_item(store, 1, "text", [(0, "content", unit(0.6, 0.8, 0, 0)), (2, "passage", unit(0.8, 0, 0.6, 0)),
                                (3, "passage", unit(0.1, 0, 0, 0.994987))], text="abcd")
    put_item(store, 2, "image", [(0, "content", unit(0.7, 0.714143, 0, 0))])
    put_item(store, 3, "image", [(0, "content", unit(0.2, 0, 0.979796, 0)), (1, "caption", unit(0.75, 0, 0, 0.661438))],
             caption="a caption")
    return store, q


def test_an_item_scores_its_best_vector_and_counts_once(hand_made, exact):
    store, q = hand_made
    ranking = searcher(store, exact)
    found = ranking._search(q, 10, None, ranking.index)
    assert [(i, round(s, 4)) for i, s, _ in found] == [(1, 0.8), (3, 0.75), (2, 0.7)]  # 3 items, not 5 vectors
    response = ranking.search(SearchRequest([QueryPart("text", "q")]), lambda part: q)
    assert [(h.id, h.match["kind"]) for h in response.results] == [(1, "passage"), (3, "caption"), (2, "content")]
    assert response.results[0].match["text"] == "abcd"[0:4] and response.results[1].match["text"] == "a caption"


def test_k_distinct_items_even_when_one_item_has_many_better_vectors(db_url, exact):
    store = Store(db_url)
    q = unit(1, 0, 0, 0)
    put_item(store, 1, "audio", [(0, "content", unit(0.9, 0.43589, 0, 0))] +
             [(slot, "segment", unit(0.95 - slot * 0.001, 0.3, 0, 0)) for slot in range(2, 60)], duration=240.0)
    for item_id, score in ((2, 0.5), (3, 0.4), (4, 0.3)):
        put_item(store, item_id, "audio", [(0, "content", unit(score, np.sqrt(1 - score ** 2), 0, 0))])
    ranking = searcher(store, exact)
    found = ranking._search(q, 3, None, ranking.index)
    assert [i for i, _, _ in found] == [1, 2, 3]
    assert found[0][1] == pytest.approx(float(unit(0.948, 0.3, 0, 0) @ q), abs=1e-6)


def test_late_fusion_and_negative_parts_use_each_items_best_vector(hand_made, exact):
    """A negative part's exact penalty uses the same max over an item's vectors. In one list (index fused),
    relative fusion: q gives 1 → 1.0, 3 → 0.5, 2 → 0.0; e3 (weight −2) gives 1 → 0.995 (its second passage),
    3 → 0.661 (caption), 2 → 0, normalised over 0…0.995: fused 2 → 0, 3 → 0.5 − 2·0.665, 1 → 1 − 2."""
    store, q = hand_made
    request = SearchRequest([QueryPart("text", "q"), QueryPart("text", "not", weight=-2.0)], fusion="relative",
                            index="fused", explain=True)
    vectors = {"q": q, "not": unit(0, 0, 0, 1)}
    response = searcher(store, exact).search(request, lambda part: vectors[part.value])
    by_id = {hit.id: hit for hit in response.results}
    # item 1: best for q 0.8 (passage), best for e3 0.994987 (its other passage): pushed to the bottom
    assert by_id[1].parts[1]["score"] == pytest.approx(0.994987, abs=1e-5)
    assert by_id[1].parts[0]["match"]["kind"] == "passage"
    assert by_id[3].parts[0]["vectors"] == pytest.approx({"content": 0.2, "caption": 0.75}, abs=1e-5)
    assert [(hit.id, round(hit.score, 3)) for hit in response.results] == [(2, 0.0), (3, -0.83), (1, -1.0)]


def note(opening: list[str], ending: list[str]) -> str:
    return " ".join(opening) + ". " + " ".join(ending) + "."


@pytest.fixture
def ten_notes(tmp_path):
    """Ten notes sharing a 150-word opening, each ending with its own 30-word passage."""
    rng = random.Random(7)
    vocabulary = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "so", "ti", "vu", "ze")
                  for b in ("ban", "cor", "dil", "fen", "gut", "hom", "jas", "kel", "lum", "mor")]
    opening = [rng.choice(vocabulary) for _ in range(150)]
    words = ["river", "garden", "engine", "violin", "harbor", "desert", "winter", "castle", "market", "forest",
             "copper", "silver", "orange", "purple", "window", "ladder", "rocket", "pencil", "camera", "bridge",
             "island", "candle", "mirror", "basket", "tunnel", "meadow", "planet", "anchor", "lantern", "feather"]
    endings = [[rng.choice(words) for _ in range(30)] for _ in range(10)]
    root = tmp_path / "notes"
    root.mkdir()
    for n, ending in enumerate(endings):
        (root / f"note{n}.txt").write_text(note(opening, ending))
    return root, endings


def test_a_passage_finds_its_own_long_note(ten_notes, settings):
    root, endings = ten_notes
    library = Library(settings)
    library.run_index([str(root)])
    found = 0
    for n, ending in enumerate(endings):
        passage = " ".join(ending) + "."
        hits = library.search(SearchRequest([QueryPart("text", passage)], k=10)).results
        assert len(hits) == 10 and hits[0].score > hits[1].score + 1e-3, "the first place ties"
        if hits[0].item.path.endswith(f"note{n}.txt"):
            found += 1
            assert hits[0].match["kind"] == "passage" and passage in hits[0].match["text"]
    assert found >= 8


def test_passages_fit_the_text_tower_and_cover_the_note(ten_notes, settings):
    root, _ = ten_notes
    library = Library(settings)
    library.run_index([str(root)])
    encoder = library.encoder()
    text = (root / "note0.txt").read_text()
    item_id = library.store.ids_under(str(root / "note0.txt"))[0]
    rows = library.store.part_vectors([item_id])[item_id]
    passages = [row for row in rows if row.kind == "passage"]
    assert len(passages) >= 3 and rows[0].kind == "content"
    assert passages[0].start == 0 and passages[-1].end == len(text)
    for before, after in zip(passages, passages[1:]):
        # they overlap, or meet where a sentence ends: no word falls between two
        assert after.start < before.end or not text[int(before.end):int(after.start)].strip()
    for row in passages:
        assert encoder.count_tokens(text[int(row.start):int(row.end)]) <= encoder.context_tokens
        np.testing.assert_allclose(row.vector, encoder.encode_texts([text[int(row.start):int(row.end)]])[0],
                                   atol=1e-5)


def test_a_query_image_finds_its_own_captioned_file_first(settings, runner, data_dir, client):
    from pathlib import Path
    samples = Path(__file__).resolve().parents[1] / "samples"
    assert runner("index", str(samples)).exit_code == 0
    for flag, name in (("--image", "photos/sunset.jpg"), ("--audio", "sounds/doorbell.wav")):
        assert (samples / name).with_suffix(".txt").exists() or (samples / (name + ".txt")).exists() or True
        result = json.loads(runner("search", flag, str(samples / name), "--json").stdout)
        top = result["results"][0]
        assert (top["name"], top["match"]["kind"]) == (Path(name).name, "content")
        assert top["score"] == pytest.approx(1.0, abs=1e-4)
        lines = runner("search", flag, str(samples / name), "-k", "1").stdout.splitlines()
        assert lines[0].endswith(name.split("/")[1]) and lines[1].strip() == "matched: content 1.0000"
    with open(samples / "photos" / "sunset.jpg", "rb") as handle:
        response = client.post("/api/search", data={"image": (handle, "q.jpg")}, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    top = response.get_json()["results"][0]
    assert (top["name"], top["match"]["kind"]) == ("sunset.jpg", "content")


def test_an_old_data_dir_gets_its_passages_and_segments_on_the_next_index(ten_notes, settings, runner):
    """A data dir made before passages and segments existed (migration 0002 leaves its notes and sounds with
    content vectors only and layout NULL) is told about it by verify and completed by the next index run."""
    root, endings = ten_notes
    library = Library(settings)
    library.run_index([str(root)])
    db = settings.data_path / "mmsearch.db"
    with sqlite3.connect(db) as connection:  # what migrating a data dir of the last release leaves
        connection.execute("DELETE FROM vectors WHERE slot >= 2")
        connection.execute("UPDATE items SET layout = NULL")
        connection.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    result = runner("verify", "--json")
    assert result.exit_code == 1
    assert any("10 items were indexed before passages and segments existed" in p
               for p in json.loads(result.stdout)["problems"])
    result = runner("index", str(root), "--json")
    assert json.loads(result.stdout)["updated"] == 10
    assert runner("verify").exit_code == 0
    again = Library(settings)
    assert again.stats()["vectors"]["passage"] >= 30 and again.stats()["waiting_for_parts"] == 0
    hits = again.search(SearchRequest([QueryPart("text", " ".join(endings[4]) + ".")], k=3)).results
    assert hits[0].match["kind"] == "passage"


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_hybrid_finds_a_made_up_word_and_a_file_name_word_first(store_kind, runner, tmp_path, request):
    """A word that only one note's text holds, and a word only one file name holds, are invisible to the
    random tiny model's vectors; with --hybrid each finds its item first, on either store. Without it,
    nothing changes: the same ranking as before, no lexical entry in explain."""
    from PIL import Image
    root = tmp_path / "media"
    root.mkdir()
    for n in range(12):
        (root / f"note{n}.txt").write_text(f"notes from the meeting number {n} about the garden and the budget")
        Image.new("RGB", (32, 32), (20 * n, 100, 200 - 10 * n)).save(root / f"photo{n}.png")
    (root / "note5.txt").write_text("notes from the meeting about the zorblax and the budget")
    (root / "note7.txt").write_text("notes from the meeting number 7 about the budget and the garden")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "invoiceACME_2024-scan.png")
    extra = {"MMSEARCH_DB_URL": request.getfixturevalue("postgres").new_database()} if store_kind == "postgresql" \
        else {}
    assert runner("index", str(root), "--json", extra_env=extra).exit_code == 0

    def top(*args: str) -> dict:
        result = runner("search", *args, "--json", extra_env=extra)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)
    for words, name in (("zorblax", "note5.txt"), ("acme", "invoiceACME_2024-scan.png"),
                        ("invoice", "invoiceACME_2024-scan.png")):
        plain, hybrid = top(words, "--explain"), top(words, "--hybrid", "--explain")
        assert hybrid["results"][0]["name"] == name, (words, [r["name"] for r in hybrid["results"][:3]])
        assert hybrid["results"][0]["parts"][0]["lexical"]["rank"] == 1
        assert all("lexical" not in r["parts"][0] for r in plain["results"])
        assert [r["name"] for r in plain["results"]] == [r["name"] for r in top(words, "--explain")["results"]]
    # Every note holds "budget" and "garden"; only note7 holds them as the phrase
    phrase = top('"the budget and the garden"', "--hybrid", "--explain", "-k", "13")["results"]
    assert phrase[0]["name"] == "note7.txt"
    assert [r["name"] for r in phrase if r["parts"][0]["lexical"]["rank"] is not None] == ["note7.txt"]
    # The text output's explain line: the lexical rank and the score, at the vector scores' 4 decimals
    said = runner("search", "zorblax", "--hybrid", "--explain", extra_env=extra).stdout
    score = top("zorblax", "--hybrid", "--explain")["results"][0]["parts"][0]["lexical"]["score"]
    assert f"words rank 1 ({score:.4f})" in said.splitlines()[2], said


def test_near_duplicate_folding_keeps_notes_that_end_differently(ten_notes, settings, tmp_path):
    """--dedupe 0.95 folded the ten notes into one when each was one vector (their openings); now two
    items fold only when each of their vectors has a near-identical one in the other: a copy of a note
    folds into it, a note with another ending does not."""
    root, endings = ten_notes
    (root / "copy-of-note3.txt").write_text((root / "note3.txt").read_text() + "\n")
    library = Library(settings)
    library.run_index([str(root)])
    query = " ".join(endings[3]) + "."
    plain = library.search(SearchRequest([QueryPart("text", query)], k=11)).results
    folded = library.search(SearchRequest([QueryPart("text", query)], k=11, dedupe=0.95)).results
    names = [hit.item.path.rsplit("/", 1)[1] for hit in folded]
    assert len(plain) == 11 and len(folded) == 10
    assert names[0] in ("note3.txt", "copy-of-note3.txt") and "note0.txt" in names and "note9.txt" in names
    assert not {"note3.txt", "copy-of-note3.txt"} <= set(names)


def test_verify_finds_a_full_text_index_out_of_step_and_repair_makes_it_again(settings, runner):
    from pathlib import Path
    samples = Path(__file__).resolve().parents[1] / "samples"
    assert runner("index", str(samples)).exit_code == 0
    assert runner("verify").exit_code == 0
    with sqlite3.connect(settings.data_path / "mmsearch.db") as connection:  # words of no item, by hand
        connection.execute("INSERT INTO items_fts (rowid, name_terms, path, caption, text) "
                           "VALUES (99999, 'ghost', '/nowhere', NULL, 'ghost words')")
    result = runner("verify", "--json")
    assert result.exit_code == 1 and any("full-text index" in p for p in json.loads(result.stdout)["problems"])
    repaired = runner("verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    assert any("full-text index" in line for line in json.loads(repaired.stdout)["repaired"])
    assert runner("verify").exit_code == 0
    hits = json.loads(runner("search", "holiday", "--hybrid", "--json").stdout)["results"]
    assert hits[0]["name"] == "holiday.txt"


def test_hybrid_reads_the_words_while_the_query_is_embedded(hand_made, exact):
    """The full-text read runs beside the embedding and the vector search (after them it cost a hybrid query
    at 100k items ~0.5 ms): the embedder here waits for the read to have begun."""
    store, q = hand_made
    began, threads = threading.Event(), []
    read = store.lexical

    def lexical(*args, **kwargs):
        threads.append(threading.get_ident())
        began.set()
        return read(*args, **kwargs)

    def embed(part):
        assert began.wait(10), "the words were not being read while the query was embedded"
        return q

    store.lexical = lexical
    response = searcher(store, exact).search(SearchRequest([QueryPart("text", "abcd")], hybrid=True, explain=True), embed)
    assert threads and threads[0] != threading.get_ident()
    assert response.results[0].id == 1 and response.results[0].parts[0]["lexical"]["rank"] == 1


def test_hybrid_on_an_in_memory_database_reads_in_the_calling_thread():
    """An in-memory SQLite database is one per connection: a worker thread's connection would see none of it."""
    store = Store("sqlite://")
    put_item(store, 1, "text", [(0, "content", unit(0, 1, 0, 0))], text="a zyxglorp note")
    put_item(store, 2, "text", [(0, "content", unit(1, 0, 0, 0))], text="another note")
    response = searcher(store, ("Flat", FaissIndex)).search(
        SearchRequest([QueryPart("text", "zyxglorp")], hybrid=True, alpha=0.3), lambda part: unit(1, 0, 0, 0))
    assert [hit.id for hit in response.results] == [1, 2]


def test_a_deep_search_asks_only_for_what_its_items_hold_and_still_finds_the_exact_top(tmp_path):
    """k items at once: the first FAISS call asks for k × (vectors per item) + 8 vectors, not twice that
    (FAISS's heap made the 2,700 vectors of a 100-deep list over notes of 13.5 passages cost +0.9 ms), and a
    row that found too few goes deeper: the items are the exact top-k by their best vectors."""
    rng = np.random.default_rng(5)
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    centres = rng.normal(size=(120, DIM))
    best = {}
    for item_id, centre in enumerate(centres, start=1):
        count = int(rng.integers(1, 25))
        vectors = [unit(*(centre + 0.2 * rng.normal(size=DIM))) for _ in range(count)]
        put_item(store, item_id, "text", [(0, "content", vectors[0])] +
                 [(slot, "passage", v) for slot, v in enumerate(vectors[1:], start=2)])
        best[item_id] = vectors
    ranking = searcher(store, ("Flat", FaissIndex))
    part = ranking.index.parts["text"]
    asked = []
    plain = part._vector_search

    def counting(items, allowed):
        search = plain(items, allowed)
        return lambda queries, depth: (asked.append(depth), search(queries, depth))[1]

    part._vector_search = counting
    per_item = part.ntotal / 120
    for k in (5, 30, 100):
        for query in rng.normal(size=(5, DIM)).astype(np.float32):
            query /= np.linalg.norm(query)
            asked.clear()
            found = ranking._search(query, k, None, ranking.index)
            exact_top = sorted(best, key=lambda i: -max(float(v @ query) for v in best[i]))[:k]
            assert [i for i, _, _ in found] == exact_top
            assert asked[0] <= k * per_item + 8


def test_an_item_found_by_its_words_alone_says_its_match_is_lexical(db_url, monkeypatch):
    """Beyond the vector lists' depth an item can come only from the full-text list: its match is
    {"kind": "lexical", "score": its BM25 / ts_rank_cd score}, and it ranks by its words."""
    from mmsearch.search import query as query_module
    monkeypatch.setattr(query_module, "LATE_DEPTH", 1)
    store = Store(db_url)
    for item_id, vector in ((1, unit(1, 0, 0, 0)), (2, unit(0.9, 0.1, 0, 0)), (3, unit(0.8, 0.2, 0, 0))):
        put_item(store, item_id, "text", [(0, "content", vector)], text=f"plain note {item_id}")
    put_item(store, 4, "text", [(0, "content", unit(-1, 0, 0, 0))], text="the zyxglorp note")
    ranking = searcher(store, ("Flat", FaissIndex))
    response = ranking.search(SearchRequest([QueryPart("text", "zyxglorp")], k=2, hybrid=True, explain=True),
                              lambda part: unit(1, 0, 0, 0))
    first = response.results[0]
    assert first.id == 4 and first.match["kind"] == "lexical" and first.match["score"] > 0
    assert first.parts[0]["lexical"]["rank"] == 1
    assert response.results[1].id == 1 and response.results[1].match["kind"] == "content"
