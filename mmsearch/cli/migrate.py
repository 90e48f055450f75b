"""mmsearch migrate: upgrade a data dir's database made by an older mmsearch to this release's schema;
mmsearch migrate-vectors: move its vector index to another vector store (mmsearch.vector_migration)."""
from __future__ import annotations

import click

from mmsearch.datadir import DataDir
from mmsearch.errors import DataDirError

from .app import Context, cli, command


@cli.command()
@command
def migrate(ctx: Context) -> None:
    """Upgrade the database to this release's schema; other commands refuse an older one until then."""
    from mmsearch.search.store import Store
    path = ctx.settings.data_path
    if not ctx.settings.db_url and not (path / "mmsearch.db").is_file():
        raise DataDirError(f"no database in data dir {path}: nothing to migrate")
    # Not through a Library, which would refuse the old schema on opening; the writers' lock is still taken,
    # so no indexer writes while tables change under it. (With PostgreSQL the folder may not exist yet.)
    with DataDir(path).write_lock():
        change = Store(ctx.settings.database_url, migrate=True).schema_change
    ctx.emit({"from": change.before, "to": change.after, "upgraded": change.changed}, _say)


def _say(done: dict) -> str:
    from mmsearch.search.schema import UNSTAMPED
    if not done["upgraded"]:
        return f"already up to date (schema {done['to']})"
    if done["from"] is None:
        return f"created the schema at {done['to']}"
    before = "a schema from before revisions" if done["from"] == UNSTAMPED else done["from"]
    return f"upgraded from {before} to {done['to']}"


@cli.command("migrate-vectors")
@click.option("--to", "target", required=True, metavar="STORE",
              help="The new vector store, as setting vector_store is written: faiss, milvus:PATH.db or "
              "milvus:http://HOST:PORT (also milvus://HOST:PORT).")
@click.option("--remove-source", is_flag=True, help="Delete the old store's FAISS files or Milvus collections "
              "once the new store verified (SQL keeps every vector: a process still set to the old store "
              "builds it again from SQL).")
@command
def migrate_vectors(ctx: Context, target: str, remove_source: bool) -> None:
    """Move the vector index to another store: fill it from SQL, verify it, say the setting to use from now on."""
    from mmsearch.vector_migration import migrate_vectors as move
    ctx.emit(move(ctx.settings, target, remove_source), _said_moved)


def _said_moved(done: dict) -> str:
    counts = ", ".join(f"{space} {n}" for space, n in done["vectors"].items())
    types = ", ".join(sorted(set(done["types"].values())))
    lines = [f"moved {sum(done['vectors'].values())} vectors ({counts}) from {done['from']} to {done['to']} "
             f"({types}) in {done['seconds']:.1f}s, verified against SQL",
             f"from now on set {done['setting']['config']} in the config file, or {done['setting']['env']} "
             "(settings are not kept in the data dir: every process that opens it needs the new one)"]
    lines += [f"removed: {what}" for what in done["removed"]] or \
        ["the old store is kept (a cache of SQL, caught up if used again); --remove-source deletes it"]
    return "\n".join(lines)
