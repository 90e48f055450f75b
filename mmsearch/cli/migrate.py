"""mmsearch migrate: upgrade a data dir's database made by an older mmsearch to this release's schema."""
from __future__ import annotations

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
