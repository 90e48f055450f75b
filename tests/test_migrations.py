"""Schema migrations: Alembic builds the ORM's schema, refuses older and newer databases on opening, and
`mmsearch migrate` upgrades a data dir made before Alembic with nothing lost.

tests/data/f228a27-mmsearch.db is the SQLite file of a data dir made by commit f228a27 (the last release
before Alembic): `python3 manage.py index samples --model tiny` in a worktree of that commit, on a copy of
samples/ with an unreadable photos/broken.jpg added, so it holds items of every modality, caption vectors
and a failure.
"""
from __future__ import annotations

import fcntl
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, create_engine, text

from mmsearch.errors import DataDirError
from mmsearch.search import lexical, schema
from mmsearch.search.store import Store
from mmsearch.search.tables import Base

OLD_RELEASE_DB = Path(__file__).parent / "data" / "f228a27-mmsearch.db"
# The items columns of revision 0001 (later revisions add columns; what was there must stay as it was)
OLD_ITEM_COLUMNS = ("id, path, modality, size, mtime_ns, content_hash, mime, width, height, duration, sample_rate, "
                    "channels, taken_at, caption, text, status, error, indexed_at")
NEXT = f"{int(schema.HEAD) + 1:04d}"  # a next release's revision, in the tests that install one


def old_schema(db_url: str) -> None:
    """What the last release before Alembic made of a new database: revision 0001's tables, unstamped."""
    from alembic import command
    engine = create_engine(db_url)
    with engine.begin() as connection:
        command.upgrade(schema.alembic_config(connection), "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text("DELETE FROM meta"))
    engine.dispose()


def rows(db: Path) -> dict[str, list[tuple]]:
    """Every row that carries meaning, read with plain sqlite3: items (captions and failures also on their
    own, to say what broke), vectors with their bytes, meta, and the counter that keeps ids from being reused."""
    with sqlite3.connect(db) as connection:
        old = "part" in {row[1] for row in connection.execute("PRAGMA table_info(vectors)")}  # before 0002
        return {
            "items": connection.execute(f"SELECT {OLD_ITEM_COLUMNS} FROM items ORDER BY id").fetchall(),
            "captions": connection.execute("SELECT id, caption FROM items WHERE caption IS NOT NULL "
                                           "ORDER BY id").fetchall(),
            "failures": connection.execute("SELECT path, error FROM items WHERE status = 'failed' "
                                           "ORDER BY path").fetchall(),
            "vectors": connection.execute(f"SELECT item_id, {'part' if old else 'kind'}, encoder, dim, data, "
                                          f"generation FROM vectors ORDER BY item_id, {'part' if old else 'kind'}"
                                          ).fetchall(),
            "meta": connection.execute("SELECT key, value FROM meta ORDER BY key").fetchall(),
            "sequence": connection.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name").fetchall(),
        }


def ddl(db: Path) -> set[tuple]:
    """The schema as SQLite stores it, without Alembic's own table and ANALYZE's statistics."""
    with sqlite3.connect(db) as connection:
        return set(connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name NOT IN "
                                      "('alembic_version', 'sqlite_stat1')").fetchall())


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def old_data_dir(data_dir: Path) -> Path:
    data_dir.mkdir()
    shutil.copyfile(OLD_RELEASE_DB, data_dir / "mmsearch.db")
    return data_dir


def test_fixture_is_a_data_dir_of_the_release_before_alembic(old_data_dir):
    before = rows(old_data_dir / "mmsearch.db")
    assert len(before["items"]) == 11 and len(before["captions"]) == 5
    assert [path.rsplit("/", 1)[1] for path, _ in before["failures"]] == ["broken.jpg"]
    assert {part for _, part, *_ in before["vectors"]} == {"content", "caption"}
    assert ("schema_version", "1") in before["meta"]
    assert OLD_RELEASE_DB.stat().st_size < 200_000


def test_data_dir_of_the_last_release_is_refused_then_migrated_with_nothing_lost(old_data_dir, runner):
    db = old_data_dir / "mmsearch.db"
    before = rows(db)

    for command in ("stats", "failed"):
        line = one_error_line(runner(command))
        assert line == (f"error: data dir {old_data_dir} was made by an older mmsearch (schema from before "
                        f"revisions, this one needs {schema.HEAD}): run 'mmsearch migrate' first")
    assert rows(db) == before  # refusing changes nothing

    result = runner("migrate", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"from": schema.UNSTAMPED, "to": schema.HEAD, "upgraded": True}

    assert rows(db) == before
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(schema.HEAD,)]
    stats = json.loads(runner("stats", "--json").stdout)
    assert (stats["items"], stats["failed"], stats["by_modality"]) == (10, 1, {"image": 5, "audio": 2, "text": 3})
    assert stats["index"]["items"] == 10  # the vector index is rebuilt from the migrated vectors
    assert stats["index"]["ntotal"] == 15 == len(before["vectors"])  # their content and caption vectors
    assert stats["waiting_for_parts"] == 5  # notes and sounds: the next index run adds passages and segments
    failed = json.loads(runner("failed", "--json").stdout)["failed"]
    assert [(row["path"], row["error"]) for row in failed] == before["failures"]


def test_database_made_before_alembic_is_migrated_on_sqlite_and_postgresql(db_url, runner):
    """What the last release did to a new database, then its own first rows."""
    old_schema(db_url)
    with create_engine(db_url).begin() as connection:
        connection.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', '1'), ('generation', '4')"))
    url = {"MMSEARCH_DB_URL": db_url}
    refusal = one_error_line(runner("stats", extra_env=url))
    assert "was made by an older mmsearch (schema from before revisions" in refusal
    result = runner("migrate", "--json", extra_env=url)
    assert json.loads(result.stdout) == {"from": schema.UNSTAMPED, "to": schema.HEAD, "upgraded": True}
    store = Store(db_url)
    assert (schema.revision(store.engine), store.generation()) == (schema.HEAD, 4)


def test_migrate_waits_for_no_writer(old_data_dir, runner):
    before = rows(old_data_dir / "mmsearch.db")
    with open(old_data_dir / "write.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # an indexer at work
        line = one_error_line(runner("migrate"))
    assert line == f"error: another mmsearch process is writing to {old_data_dir}; wait for it to finish"
    assert rows(old_data_dir / "mmsearch.db") == before
    with sqlite3.connect(old_data_dir / "mmsearch.db") as connection:
        assert not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchall()


def test_migrate_says_what_it_did(old_data_dir, runner):
    first = runner("migrate")
    assert (first.exit_code, first.stdout.strip()) == (0, f"upgraded from a schema from before revisions to "
                                                          f"{schema.HEAD}")
    again = runner("migrate")
    assert (again.exit_code, again.stdout.strip()) == (0, f"already up to date (schema {schema.HEAD})")


def test_migrate_on_an_up_to_date_data_dir_changes_nothing(data_dir, settings, runner):
    data_dir.mkdir()
    Store(settings.database_url).set_meta("generation", 5)
    with sqlite3.connect(data_dir / "mmsearch.db") as connection:
        dump = list(connection.iterdump())
    result = runner("migrate", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"from": schema.HEAD, "to": schema.HEAD, "upgraded": False}
    with sqlite3.connect(data_dir / "mmsearch.db") as connection:
        assert list(connection.iterdump()) == dump


def test_migrate_without_a_database_creates_nothing(data_dir, runner):
    line = one_error_line(runner("migrate"))
    assert line == f"error: no database in data dir {data_dir}: nothing to migrate"
    assert not data_dir.exists()


REVISION_NEXT = f'''
import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels, depends_on = "{NEXT}", "{schema.HEAD}", None, None


def upgrade():
    op.add_column("items", sa.Column("rating", sa.Integer()))  # ALTER TABLE: the table is not copied
'''


def install_next_revision(tmp_path: Path, monkeypatch, then: str = "") -> None:
    """A next release: this one's migrations plus a revision that adds a column to items, and then runs the
    statement ``then``."""
    folder = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / f"{NEXT}_rating.py").write_text(REVISION_NEXT + (f"    {then}\n" if then else ""))
    monkeypatch.setattr(schema, "MIGRATIONS", folder)
    monkeypatch.setattr(schema, "HEAD", NEXT)


def test_next_release_upgrades_the_last_one_without_losing_vectors(old_data_dir, runner, tmp_path, monkeypatch):
    db = old_data_dir / "mmsearch.db"
    with sqlite3.connect(db) as connection:  # the newest item removed: its id must never come back
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("DELETE FROM items WHERE id = (SELECT MAX(id) FROM items WHERE status = 'ok')")
    before = rows(db)
    assert before["sequence"] == [("items", 11)] and before["items"][-1][0] == 10
    install_next_revision(tmp_path, monkeypatch)
    result = runner("migrate")
    assert (result.exit_code, result.stdout.strip()) == (0, f"upgraded from a schema from before revisions to {NEXT}")
    assert rows(db) == before  # every revision on the way kept every item, vector and counter


def test_database_at_an_older_revision_is_refused_until_migrated(data_dir, settings, runner, tmp_path,
                                                                 monkeypatch):
    data_dir.mkdir()
    Store(settings.database_url).set_meta("generation", 7)
    current = schema.HEAD
    install_next_revision(tmp_path, monkeypatch)
    line = one_error_line(runner("stats"))
    assert line == (f"error: data dir {data_dir} was made by an older mmsearch (schema {current}, this one needs "
                    f"{NEXT}): run 'mmsearch migrate' first")
    result = runner("migrate", "--json")
    assert json.loads(result.stdout) == {"from": current, "to": NEXT, "upgraded": True}
    store = Store(settings.database_url)
    assert (schema.revision(store.engine), store.generation()) == (NEXT, 7)


def test_failed_migration_changes_nothing(old_data_dir, tmp_path, monkeypatch):
    db = old_data_dir / "mmsearch.db"
    before, tables = rows(db), ddl(db)
    install_next_revision(tmp_path, monkeypatch, then="raise RuntimeError('the disk is full')")
    with pytest.raises(DataDirError, match="the disk is full"):
        Store(f"sqlite:///{db}", migrate=True)
    assert (rows(db), ddl(db)) == (before, tables)  # items not rebuilt, nothing stamped
    with sqlite3.connect(db) as connection:
        assert not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchall()


def test_revision_that_loses_autoincrement_is_stopped(old_data_dir, tmp_path, monkeypatch):
    """Ids must never be reused, and batch mode's reflection drops AUTOINCREMENT unless told again."""
    db = old_data_dir / "mmsearch.db"
    before = rows(db)
    install_next_revision(tmp_path, monkeypatch, then="with op.batch_alter_table('items', recreate='always'): pass")
    with pytest.raises(DataDirError, match="migration lost AUTOINCREMENT on items"):
        Store(f"sqlite:///{db}", migrate=True)
    assert rows(db) == before


def test_new_database_is_created_at_head(db_url):
    store = Store(db_url)
    assert (store.schema_change.before, store.schema_change.after) == (None, schema.HEAD)
    assert schema.revision(store.engine) == schema.HEAD
    assert (store.get_meta("schema_version"), store.generation()) == (1, 0)
    store.set_meta("generation", 3)
    reopened = Store(db_url)  # at head: opened as it is
    assert not reopened.schema_change.changed and reopened.generation() == 3


def test_database_of_a_newer_release_is_refused(db_url):
    Store(db_url).engine.dispose()
    with create_engine(db_url).begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    for migrate in (False, True):
        with pytest.raises(DataDirError, match=r"was made by a newer mmsearch \(schema 9999, this one knows up "
                                               rf"to {schema.HEAD}\)"):
            Store(db_url, migrate=migrate)
    with create_engine(db_url).connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"


def test_tables_of_an_unknown_schema_are_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    with create_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY)"))
    with pytest.raises(DataDirError, match="unknown schema"):
        Store(url, migrate=True)


def test_migrations_build_exactly_the_orm_schema(db_url):
    """Everything but the full-text index's own objects (lexical.not_in_orm: kept by the database itself)."""
    engine = Store(db_url).engine
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                               "include_name": lexical.include_name})
        assert compare_metadata(context, Base.metadata) == []
        # The comparison sees a drift: an ORM column no revision creates
        drifted = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(drifted)
        drifted.tables["items"].append_column(Column("rating", Integer))
        assert [diff[0] for diff in compare_metadata(context, drifted)] == ["add_column"]


def test_revision_0001_is_the_schema_the_last_release_made(tmp_path):
    """Byte for byte on SQLite, AUTOINCREMENT included (which compare_metadata does not look at)."""
    old_schema(f"sqlite:///{tmp_path / 'new.db'}")
    assert ddl(tmp_path / "new.db") == ddl(OLD_RELEASE_DB)
    assert any("AUTOINCREMENT" in (sql or "") for _, name, _, sql in ddl(OLD_RELEASE_DB) if name == "items")


def test_head_is_the_newest_revision():
    assert ScriptDirectory(str(schema.MIGRATIONS)).get_current_head() == schema.HEAD
