"""The full-text half of hybrid search (search/lexical.py): file names split into words, paths, captions and
note text, ranked by BM25 (SQLite FTS5) or ts_rank_cd (PostgreSQL), kept in step with the rows in their own
transactions; quoted phrases; hostile query text; the filter's ids; revision 0003 on databases with items."""
from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import create_engine, insert, inspect, select, text

from mmsearch.search import lexical, schema
from mmsearch.search.store import Store
from mmsearch.search.tables import FAILED, OK, PENDING, Item

OLD_RELEASE_DB = Path(__file__).parent / "data" / "f228a27-mmsearch.db"
NOTES = {
    "meeting": ("/home/ann/notes/meeting.txt", "The zyxglorp protocol was discussed at length, then lunch."),
    "lunch": ("/home/ann/notes/lunch.txt", "Nothing about protocols here, only lunch and coffee."),
    "adjacent": ("/home/ann/notes/trip.txt", "We met in New York last spring and walked a lot."),
    "apart": ("/home/ann/notes/city.txt", "York is an old city; new things came to it slowly."),
    "waiting": ("/home/ann/notes/pending.txt", "zyxglorp again, but this note is not indexed yet."),
}
IMAGES = {
    "holiday": ("/home/ann/photos/MyHolidayPhoto_IMG1234.JPEG", None),
    "invoice": ("/home/ann/scans/invoice-2024-acme.pdf", None),
    "bicycle": ("/home/ann/photos/DSC_0042.jpg", "a red bicycle leaning against a wall"),
}


def new_item(path: str, modality: str, status: str = OK, **columns) -> Item:
    return Item(path=path, modality=modality, size=1, mtime_ns=0, status=status,
                indexed_at=dt.datetime(2024, 1, 1), **columns)


@pytest.fixture
def library(db_url) -> tuple[Store, dict[str, int]]:
    store = Store(db_url)
    with store.session() as session:
        items = {name: new_item(path, "text", PENDING if name == "waiting" else OK, text=body)
                 for name, (path, body) in NOTES.items()}
        items |= {name: new_item(path, "image", caption=caption) for name, (path, caption) in IMAGES.items()}
        session.add_all(items.values())
        session.flush()
        ids = {name: item.id for name, item in items.items()}
    return store, ids


def names(store: Store, ids: dict[str, int], query: str, **kwargs) -> list[str]:
    by_id = {i: name for name, i in ids.items()}
    return [by_id[i] for i, _ in store.lexical(query, 20, **kwargs)]


def test_name_terms_split_names_on_punctuation_case_and_digits():
    assert lexical.name_terms("/photos/invoice-2024-acme.pdf") == "invoice 2024 acme pdf"
    assert lexical.name_terms("MyHolidayPhoto_IMG.JPEG") == "My Holiday Photo IMG JPEG MyHolidayPhoto"
    assert lexical.name_terms("/a/IMG1234.jpg") == "IMG 1234 jpg IMG1234"
    assert lexical.name_terms("/a/HTMLParser.py") == "HTML Parser py HTMLParser"
    assert lexical.name_terms("/a.b/c") == "c"  # the base name only: the path is indexed on its own
    assert lexical.name_terms("/a/___") is None and lexical.name_terms(None) is None
    item = new_item("/x/oldName.txt", "text")
    item.path = "/x/new_name.txt"  # every writer of a path keeps its words in step
    assert item.name_terms == "new name txt"


def test_a_made_up_word_finds_the_only_note_that_holds_it(library):
    store, ids = library
    assert names(store, ids, "zyxglorp") == ["meeting"]  # the pending note holding it is not searchable yet
    assert names(store, ids, "ZYXGLORP protocol")[0] == "meeting"  # both words beat one
    scores = [score for _, score in store.lexical("lunch protocol", 10)]
    assert scores == sorted(scores, reverse=True) and len(scores) == 2 and scores[0] > 0


def test_words_of_a_file_name_find_it_first(library):
    store, ids = library
    for query in ("holiday", "Photo", "MyHolidayPhoto", "img1234", "IMG", "1234", "jpeg"):
        assert names(store, ids, query)[:1] == ["holiday"], query
    for query in ("acme", "invoice 2024", "scans"):
        assert names(store, ids, query)[:1] == ["invoice"], query
    assert names(store, ids, "bicycle") == ["bicycle"]  # its caption
    assert names(store, ids, "ann")  # a folder of the path


def test_a_quoted_phrase_matches_only_adjacent_words(library):
    store, ids = library
    assert sorted(names(store, ids, "new york")) == ["adjacent", "apart"]
    assert names(store, ids, '"new york"') == ["adjacent"]
    assert names(store, ids, '"York new"') == []
    assert sorted(names(store, ids, '"new york" zyxglorp')) == ["adjacent", "meeting"]
    assert names(store, ids, '“new york”') == ["adjacent"]  # typographic quotes quote too


HOSTILE = ['"', '"""', '"new york', 'new" york', "*", "zyxglo*", "^zyxglorp", "-zyxglorp", "NOT zyxglorp",
           "zyxglorp NOT lunch", "NEAR(zyxglorp lunch, 1)", "zyxglorp AND", "OR", "(", ")", "{text}: zyxglorp",
           "text:zyxglorp", "path:x", "items_fts:zyxglorp", "' OR 1=1 --", "'; DROP TABLE items; --",
           "\\", "%", "_", "\x00", "zyx\x00glorp", "zyxglorp\x00", "\ufeff", "\u0301", ":*", "a:* & !b",
           "zyxglorp" * 40, "zyxglorp " * 2_000, "!@#$%^&*()[]{};:'\",.<>/?|`~" * 400, "𝔷𝔶𝔵" * 3000]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_never_raises_and_never_matches_everything(library, query):
    store, ids = library
    found = names(store, ids, query)
    assert len(found) < len(ids) - 1 and len(set(found)) == len(found)
    words = {w for term in lexical.parse(query) for w in term.words}
    if not words:
        assert found == []
    if "zyxglorp" in words and words <= {"zyxglorp", "not", "near", "text", "items", "fts", "1"}:
        assert found == ["meeting"], found
    if query in ("zyxglo*", ":*", "zyxglorp" * 40):  # no prefix search, no overlong words
        assert found == []
    with store.session() as session:  # nothing was run but the search
        assert session.scalar(select(Item.id).where(Item.id == ids["meeting"])) == ids["meeting"]


def test_parse_keeps_only_words_and_phrases():
    parse = lexical.parse
    assert parse('Red "New  York" red, big-city') == [lexical.Term(("red",)), lexical.Term(("new", "york")),
                                                      lexical.Term(("big",)), lexical.Term(("city",))]
    assert parse('an "open quote') == parse("an open quote")
    assert parse('"" " " "!!"') == [] and parse(None) == []
    assert len(parse(" ".join(f"w{i}" for i in range(1000)))) == lexical.MAX_TERMS
    query = lexical.fts5_query(parse('a "c d" NEAR(e) x"y'))
    assert query == '"a" OR "c d" OR "near" OR "e" OR "x" OR "y"'


def test_the_index_follows_updates_and_deletes_in_their_transaction(library):
    store, ids = library
    dialect = store.engine.dialect.name
    with store.session() as session:
        item = session.get(Item, ids["lunch"])
        item.text = "Now this note says zyxglorp twice: zyxglorp."
        session.flush()  # inside the transaction, before it commits
        found = [i for i, _ in lexical.search(session, dialect, "zyxglorp", 10)]
        assert found == [ids["lunch"], ids["meeting"]]  # more of the word, in a shorter note
    with store.session() as session:
        session.get(Item, ids["holiday"]).path = "/home/ann/photos/SailingTrip_0001.jpg"
    assert names(store, ids, "holiday") == [] and names(store, ids, "sailing trip")[:1] == ["holiday"]
    assert names(store, ids, "SailingTrip") == ["holiday"]
    with store.session() as session:  # a bulk insert, as benchmarks/ makes synthetic items
        session.execute(insert(Item), [{"path": path, "modality": "image", "size": 1, "mtime_ns": 0, "status": OK,
                                        "indexed_at": dt.datetime(2024, 1, 1)}
                                       for path in ("/s/GreenTractor_07.jpg", "/s/BlueBoat_08.jpg")])
        bulk = dict(session.execute(select(Item.name_terms, Item.id).where(Item.path.like("/s/%"))).all())
    assert set(bulk) == {"Green Tractor 07 jpg GreenTractor", "Blue Boat 08 jpg BlueBoat"}
    assert store.lexical("tractor", 5)[0][0] == bulk["Green Tractor 07 jpg GreenTractor"]
    with store.session() as session:
        session.delete(session.get(Item, ids["meeting"]))
        session.get(Item, ids["bicycle"]).caption = None
    assert names(store, ids, "zyxglorp") == ["lunch"] and names(store, ids, "bicycle") == []
    with store.session() as session:  # a status change leaves the words alone; only ok items are found
        session.get(Item, ids["lunch"]).status = FAILED
    assert names(store, ids, "zyxglorp") == []
    with store.session() as session:
        session.get(Item, ids["lunch"]).status = OK
    assert names(store, ids, "zyxglorp") == ["lunch"]
    if dialect == "sqlite":  # the FTS5 index agrees with its content table
        with store.engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO items_fts (items_fts, rank) VALUES ('integrity-check', 1)")


def test_a_rolled_back_transaction_leaves_the_index_as_it_was(library):
    store, ids = library
    with pytest.raises(RuntimeError):
        with store.session() as session:
            session.get(Item, ids["meeting"]).text = "quuxplorf only"
            session.delete(session.get(Item, ids["adjacent"]))
            session.add(new_item("/home/ann/notes/quuxplorf.txt", "text", text="quuxplorf"))
            session.flush()
            assert len(lexical.search(session, store.engine.dialect.name, "quuxplorf", 10)) == 2
            raise RuntimeError("the disk is full")
    assert names(store, ids, "quuxplorf") == []
    assert names(store, ids, "zyxglorp") == ["meeting"] and names(store, ids, '"new york"') == ["adjacent"]


def test_the_filter_ids_restrict_the_result(library):
    store, ids = library
    assert names(store, ids, "lunch", allowed=np.array([ids["lunch"]])) == ["lunch"]
    assert names(store, ids, "zyxglorp", allowed=np.array([ids["lunch"], ids["waiting"]])) == []
    assert names(store, ids, "zyxglorp", allowed=np.array([], dtype=np.int64)) == []
    many = np.concatenate([np.arange(10_000, 110_000, dtype=np.int64), [ids["meeting"]]])  # a filter's 100k ids
    assert names(store, ids, "zyxglorp lunch", allowed=many) == ["meeting"]
    assert len(store.lexical("lunch protocol", 1)) == 1 and store.lexical("lunch", 0) == []


def _at_0002(url: str) -> None:
    """A database as revision 0002 left it, with items written as that release wrote them."""
    with create_engine(url).begin() as connection:
        command.upgrade(schema.alembic_config(connection), "0002")
        for name, (path, body) in NOTES.items():
            connection.execute(text("INSERT INTO items (path, modality, size, mtime_ns, status, indexed_at, text) "
                                    "VALUES (:path, 'text', 1, 0, :status, '2024-01-01 00:00:00', :body)"),
                               {"path": path, "body": body, "status": PENDING if name == "waiting" else OK})
        path = IMAGES["holiday"][0]
        connection.execute(text("INSERT INTO items (path, modality, size, mtime_ns, status, indexed_at, caption) "
                                "VALUES (:path, 'image', 1, 0, 'ok', '2024-01-01 00:00:00', 'a calm sea')"),
                           {"path": path})


def test_a_database_at_0002_upgrades_and_finds_its_items(db_url):
    _at_0002(db_url)
    store = Store(db_url, migrate=True)
    assert (store.schema_change.before, store.schema_change.after) == ("0002", schema.HEAD)
    with store.session() as session:
        by_path = dict(session.execute(select(Item.path, Item.id)).all())
        assert session.get(Item, by_path[IMAGES["holiday"][0]]).name_terms == lexical.name_terms(IMAGES["holiday"][0])
    assert [i for i, _ in store.lexical("zyxglorp", 10)] == [by_path[NOTES["meeting"][0]]]
    assert [i for i, _ in store.lexical("holiday sea", 10)] == [by_path[IMAGES["holiday"][0]]]
    assert [i for i, _ in store.lexical('"new york"', 10)] == [by_path[NOTES["adjacent"][0]]]
    with store.session() as session:  # new rows are indexed as they are written
        session.add(new_item("/n/quuxplorf.txt", "text", text="quuxplorf"))
    assert len(store.lexical("quuxplorf", 10)) == 1


def test_downgrade_removes_what_0003_made(db_url):
    store = Store(db_url)
    with store.session() as session:
        session.add(new_item("/n/zyxglorp.txt", "text", text="zyxglorp"))
    store.engine.dispose()
    engine = create_engine(db_url)
    with engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "0002")
    inspector = inspect(engine)
    assert not [t for t in inspector.get_table_names() if t.startswith("items_fts")]
    after = {c["name"] for c in inspector.get_columns("items")}
    assert not after & {"name_terms", "search_terms"} and {"path", "layout"} <= after
    assert "ix_items_search_terms" not in {ix["name"] for ix in inspector.get_indexes("items")}
    engine.dispose()
    assert Store(db_url, migrate=True).lexical("zyxglorp", 5)  # and up again, the row indexed anew


def test_the_last_release_before_alembic_migrates_to_a_searchable_data_dir(tmp_path):
    db = tmp_path / "mmsearch.db"
    shutil.copyfile(OLD_RELEASE_DB, db)
    store = Store(f"sqlite:///{db}", migrate=True)
    with sqlite3.connect(db) as connection:
        paths = dict(connection.execute("SELECT id, path FROM items").fetchall())
    name = {i: path.rsplit("/", 1)[1] for i, path in paths.items()}
    assert [name[i] for i, _ in store.lexical("night sky", 5)][:1] == ["night-sky.jpg"]
    assert [name[i] for i, _ in store.lexical("cinnamon", 5)] == ["recipe.md"]
    assert [name[i] for i, _ in store.lexical("doorbell chime", 5)] == ["doorbell.wav"]
    assert store.lexical("broken", 5) == []  # a failed item


def test_a_status_change_does_not_index_the_item_again(tmp_path):
    """Only the four indexed columns fire the update trigger: marking 100k-character notes pending or failed
    writes their rows alone."""
    db = tmp_path / "db.sqlite"
    store = Store(f"sqlite:///{db}")
    with store.session() as session:
        session.add(new_item("/n/long.txt", "text", text="zyxglorp " * 10_000))
    with sqlite3.connect(db) as connection:
        before = connection.total_changes
        connection.execute("UPDATE items SET status = 'pending', error = 'waiting', indexed_at = '2025-01-01'")
        assert connection.total_changes - before == 1
        connection.execute("UPDATE items SET status = 'ok'")
    assert len(store.lexical("zyxglorp", 5)) == 1


def test_a_revision_that_copies_items_without_its_triggers_is_stopped(tmp_path, monkeypatch):
    """A batch copy of items drops the triggers that feed items_fts: the next revision that copies items must
    make them again, or the full-text index would silently fall behind the rows."""
    db, head = tmp_path / "mmsearch.db", schema.HEAD
    Store(f"sqlite:///{db}").engine.dispose()
    folder = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "9999_copy.py").write_text(
        "from alembic import op\n\nrevision, down_revision, branch_labels, depends_on = '9999', "
        f"'{schema.HEAD}', None, None\n\n\ndef upgrade():\n    with op.batch_alter_table('items', recreate='always', "
        "table_kwargs={'sqlite_autoincrement': True}):\n        pass\n")
    monkeypatch.setattr(schema, "MIGRATIONS", folder)
    monkeypatch.setattr(schema, "HEAD", "9999")
    with pytest.raises(Exception, match="migration lost the full-text triggers on items"):
        Store(f"sqlite:///{db}", migrate=True)
    with sqlite3.connect(db) as connection:  # nothing changed
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
        assert connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (3,)
