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
from mmsearch.search import schema
from mmsearch.search.store import Store
from mmsearch.search.tables import Base

OLD_RELEASE_DB = Path(__file__).parent / "data" / "f228a27-mmsearch.db"


def rows(db: Path) -> dict[str, list[tuple]]:
    """Every row that carries meaning, read with plain sqlite3: items (captions and failures also on their
    own, to say what broke), vectors with their bytes, meta, and the counter that keeps ids from being reused."""
    with sqlite3.connect(db) as connection:
        return {
            "items": connection.execute("SELECT * FROM items ORDER BY id").fetchall(),
            "captions": connection.execute("SELECT id, caption FROM items WHERE caption IS NOT NULL "
                                           "ORDER BY id").fetchall(),
            "failures": connection.execute("SELECT path, error FROM items WHERE status = 'failed' "
                                           "ORDER BY path").fetchall(),
            "vectors": connection.execute("SELECT item_id, part, encoder, dim, data, generation FROM vectors "
                                          "ORDER BY item_id, part").fetchall(),
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
    assert stats["index"]["ntotal"] == 10  # the vector index is rebuilt from the migrated vectors
    failed = json.loads(runner("failed", "--json").stdout)["failed"]
    assert [(row["path"], row["error"]) for row in failed] == before["failures"]


def test_database_made_before_alembic_is_migrated_on_sqlite_and_postgresql(db_url, runner):
    """What the last release did to a new database, then its own first rows."""
    with create_engine(db_url).begin() as connection:
        Base.metadata.create_all(connection)
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


REVISION_0002 = '''
import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels, depends_on = "0002", "0001", None, None


def upgrade():
    # How SQLite alters a table: copy, drop, rename. Reflection cannot see AUTOINCREMENT: it is passed again
    with op.batch_alter_table("items", recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("rating", sa.Integer()))
'''


def install_revision_0002(tmp_path: Path, monkeypatch, then: str = "") -> None:
    """A next release: this one's migrations plus a 0002 that rebuilds the items table, as most changes will,
    and then runs the statement ``then``."""
    folder = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "0002_rating.py").write_text(REVISION_0002 + (f"    {then}\n" if then else ""))
    monkeypatch.setattr(schema, "MIGRATIONS", folder)
    monkeypatch.setattr(schema, "HEAD", "0002")


def test_next_release_upgrades_the_last_one_without_losing_vectors(old_data_dir, runner, tmp_path, monkeypatch):
    db = old_data_dir / "mmsearch.db"
    with sqlite3.connect(db) as connection:  # the newest item removed: its id must never come back
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("DELETE FROM items WHERE id = (SELECT MAX(id) FROM items WHERE status = 'ok')")
    before = rows(db)
    assert before["sequence"] == [("items", 11)] and before["items"][-1][0] == 10
    install_revision_0002(tmp_path, monkeypatch)
    result = runner("migrate")
    assert (result.exit_code, result.stdout.strip()) == (0, "upgraded from a schema from before revisions to 0002")
    after = rows(db)
    assert [item[:-1] for item in after.pop("items")] == before.pop("items")  # rating: the new last column
    assert after == before  # the copy of items cascaded to no vector


def test_database_at_an_older_revision_is_refused_until_migrated(data_dir, settings, runner, tmp_path,
                                                                 monkeypatch):
    data_dir.mkdir()
    Store(settings.database_url).set_meta("generation", 7)
    install_revision_0002(tmp_path, monkeypatch)
    line = one_error_line(runner("stats"))
    assert line == (f"error: data dir {data_dir} was made by an older mmsearch (schema 0001, this one needs "
                    f"0002): run 'mmsearch migrate' first")
    result = runner("migrate", "--json")
    assert json.loads(result.stdout) == {"from": "0001", "to": "0002", "upgraded": True}
    store = Store(settings.database_url)
    assert (schema.revision(store.engine), store.generation()) == ("0002", 7)


def test_failed_migration_changes_nothing(old_data_dir, tmp_path, monkeypatch):
    db = old_data_dir / "mmsearch.db"
    before, tables = rows(db), ddl(db)
    install_revision_0002(tmp_path, monkeypatch, then="raise RuntimeError('the disk is full')")
    with pytest.raises(DataDirError, match="the disk is full"):
        Store(f"sqlite:///{db}", migrate=True)
    assert (rows(db), ddl(db)) == (before, tables)  # items not rebuilt, nothing stamped
    with sqlite3.connect(db) as connection:
        assert not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchall()


def test_revision_that_loses_autoincrement_is_stopped(old_data_dir, tmp_path, monkeypatch):
    """Ids must never be reused, and batch mode's reflection drops AUTOINCREMENT unless told again."""
    db = old_data_dir / "mmsearch.db"
    before = rows(db)
    install_revision_0002(tmp_path, monkeypatch, then="with op.batch_alter_table('items', recreate='always'): pass")
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
    engine = Store(db_url).engine
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        # The comparison sees a drift: an ORM column no revision creates
        drifted = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(drifted)
        drifted.tables["items"].append_column(Column("rating", Integer))
        assert [diff[0] for diff in compare_metadata(context, drifted)] == ["add_column"]


def test_revision_0001_is_the_schema_the_last_release_made(tmp_path):
    """Byte for byte on SQLite, AUTOINCREMENT included (which compare_metadata does not look at)."""
    Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert ddl(tmp_path / "new.db") == ddl(OLD_RELEASE_DB)
    assert any("AUTOINCREMENT" in (sql or "") for _, name, _, sql in ddl(OLD_RELEASE_DB) if name == "items")


def test_head_is_the_newest_revision():
    assert ScriptDirectory(str(schema.MIGRATIONS)).get_current_head() == schema.HEAD
