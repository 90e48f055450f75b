"""Runs migrations on the connection mmsearch.search.schema hands over in ``config.attributes``."""
from alembic import context

from mmsearch.search.tables import Base

if context.is_offline_mode():
    raise RuntimeError("mmsearch migrations run online only, on a connection from mmsearch.search.schema")

connection = context.config.attributes["connection"]
# Batch mode: SQLite alters a table by copying it, which later revisions need for most changes
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
