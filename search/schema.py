"""The database schema: created and upgraded by Alembic (search/migrations), checked each time a store opens.

Opening reads the ``alembic_version`` row with plain SQL and compares it with HEAD, so commands that find
their database up to date never import Alembic (~0.3 s of start-up); a test keeps HEAD equal to the newest
revision in versions/. Only ``mmsearch migrate`` (``upgrade``) changes an existing database.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, inspect, text

from mmsearch.errors import DataDirError

HEAD = "0004"
# A database made before Alembic: the tables and meta schema_version 1, no alembic_version table. Its schema
# is revision 0001's, so migrating it stamps it as that revision and upgrades from there.
UNSTAMPED = "unstamped"
UNSTAMPED_REVISION = "0001"
VERSION_TABLE = "alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK = 0x6D6D73636863  # pg_advisory_xact_lock key: one schema change at a time per PostgreSQL server


@dataclass(frozen=True)
class SchemaChange:
    before: str | None  # None: the database was empty; UNSTAMPED: made before Alembic
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def ensure(engine: Engine) -> SchemaChange:
    """Create a new database at HEAD, open one at HEAD, refuse any other (older or newer) in one line."""
    before = revision(engine)
    if before == HEAD:
        return SchemaChange(before, HEAD)
    _refuse(engine, before, migrating=False)
    return _upgrade(engine, migrating=False)


def upgrade(engine: Engine) -> SchemaChange:
    """Bring the database to HEAD (what ``mmsearch migrate`` runs); a database from a newer release is refused."""
    return _upgrade(engine, migrating=True)


def revision(engine: Engine) -> str | None:
    """The database's schema revision: None when it has none of mmsearch's tables, UNSTAMPED before Alembic."""
    with engine.connect() as connection:
        return _revision(connection, engine)


def alembic_config(connection: Connection) -> Any:
    """An Alembic Config for our migrations on this connection (env.py reads it from ``attributes``)."""
    from alembic.config import Config
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def in_memory(engine: Engine) -> bool:
    """An in-memory SQLite database: one per connection, so neither a file to lock nor one other threads share."""
    return engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:")


def describe(engine: Engine) -> str:
    """How errors name a database: its data dir for the default SQLite file, else its URL sans password."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and not in_memory(engine):
        path = Path(url.database)
        return f"data dir {path.parent}" if path.name == "mmsearch.db" else f"database {path}"
    return f"database {url.render_as_string(hide_password=True)}"


def _revision(connection: Connection, engine: Engine) -> str | None:
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables:
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(rows) != 1:
            raise DataDirError(f"{describe(engine)} has a damaged schema version ({len(rows)} rows in "
                               f"{VERSION_TABLE})")
        return rows[0]
    if not tables & {"items", "vectors", "meta"}:
        return None
    version = None
    if "meta" in tables:
        version = connection.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
    if version != "1":  # meta values are JSON
        raise DataDirError(f"{describe(engine)} holds tables of an unknown schema (schema_version {version}): "
                           f"not an mmsearch database this release can read")
    return UNSTAMPED


def _refuse(engine: Engine, before: str | None, migrating: bool) -> None:
    """Raise unless this database may go on to HEAD: only migrate upgrades, and nothing goes back."""
    if before is None or before == HEAD:
        return
    if before != UNSTAMPED and before not in _known_revisions():
        raise DataDirError(f"{describe(engine)} was made by a newer mmsearch (schema {before}, this one knows up "
                           f"to {HEAD}): open it with that release or a later one")
    if not migrating:
        label = "from before revisions" if before == UNSTAMPED else before
        raise DataDirError(f"{describe(engine)} was made by an older mmsearch (schema {label}, this one needs "
                           f"{HEAD}): run 'mmsearch migrate' first")


def _upgrade(engine: Engine, migrating: bool) -> SchemaChange:
    from alembic import command
    sqlite = engine.dialect.name == "sqlite"
    with _migration_connection(engine) as connection, connection.begin():
        # Alembic runs inside this one transaction, DDL included, which the lock keeps to one process:
        # two processes opening a new data dir at once must not both create it.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if sqlite else f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
        before = _revision(connection, engine)  # again, under the lock
        if before == HEAD:
            return SchemaChange(before, HEAD)
        _refuse(engine, before, migrating)
        counters = _sqlite_counters(connection) if sqlite else {}
        config = alembic_config(connection)
        if before == UNSTAMPED:
            command.stamp(config, UNSTAMPED_REVISION)
        command.upgrade(config, HEAD)
        if sqlite:
            _after_sqlite_copies(connection, counters, engine)
    return SchemaChange(before, HEAD)


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """On SQLite: foreign keys off, since batch mode copies a table and drops the old one, and dropping items
    with keys on would cascade-delete every vector (the keys are checked after instead); and the driver's
    implicit transactions off, since it would commit each CREATE and ALTER on its own."""
    with engine.connect() as connection:
        if engine.dialect.name != "sqlite":
            yield connection
            return
        driver = connection.connection.driver_connection
        isolation = driver.isolation_level
        driver.isolation_level = None
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # only outside a transaction does this count
        connection.commit()
        try:
            yield connection
        finally:  # the pool hands this connection out again
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
            driver.isolation_level = isolation


def _sqlite_counters(connection: Connection) -> dict[str, int]:
    if not connection.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").first():
        return {}
    return dict(connection.exec_driver_sql("SELECT name, seq FROM sqlite_sequence").fetchall())


def _after_sqlite_copies(connection: Connection, counters: dict[str, int], engine: Engine) -> None:
    """A batch-mode copy of a table starts its AUTOINCREMENT counter at the largest id it copied, so the ids of
    the newest removed items would be handed out again: the counters go back to where they were."""
    for name, seq in counters.items():
        table = connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                           (name,)).scalar()
        if table is None:  # dropped by the migration
            continue
        if "AUTOINCREMENT" not in table.upper():  # a bug in the revision: reflection cannot see the keyword
            raise RuntimeError(f"migration lost AUTOINCREMENT on {name}: pass "
                               f"table_kwargs={{'sqlite_autoincrement': True}} to its batch_alter_table")
        now = connection.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).scalar()
        if now is None:
            connection.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))
        elif now < seq:
            connection.exec_driver_sql("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (seq, name))
    fts = connection.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE name = 'items_fts' OR "
                                     "type = 'trigger' AND tbl_name = 'items' AND name LIKE 'items_fts_%'").scalar()
    if fts not in (0, 4):  # a copy of items drops its triggers: the full-text index would fall behind it
        raise RuntimeError("migration lost the full-text triggers on items: a revision that copies items "
                           "must create them again (see revision 0003)")
    if connection.exec_driver_sql("PRAGMA foreign_key_check").first():
        raise DataDirError(f"{describe(engine)}: migrating would break references between tables; "
                           f"nothing was changed")


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory
    return {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
