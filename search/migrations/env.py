"""Runs migrations on the connection mmsearch.search.schema hands over in ``config.attributes``."""
from alembic import context

from mmsearch.search.lexical import include_name
from mmsearch.search.tables import Base

if context.is_offline_mode():
    raise RuntimeError("mmsearch migrations run online only, on a connection from mmsearch.search.schema")

connection = context.config.attributes["connection"]
# Batch mode: SQLite alters a table by copying it, which later revisions need for most changes
# include_name: the full-text index's own tables and column are the database's, not the ORM's (search.lexical)
context.configure(connection=connection, target_metadata=Base.metadata, include_name=include_name,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
