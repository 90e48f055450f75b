"""Alembic migrations of the SQL store (env.py, versions/), run by mmsearch.search.schema; no alembic.ini.

To change the schema: edit the ORM in store.py, then write versions/NNNN_what.py (``down_revision`` the
previous one; ``schema.alembic_config(connection)`` with ``alembic.command.revision(..., autogenerate=True,
rev_id="NNNN")`` drafts it) and set ``schema.HEAD``. Use ``op.batch_alter_table`` so SQLite can follow,
with ``table_kwargs={"sqlite_autoincrement": True}`` for items (reflection cannot see it; schema stops a
revision that loses it).
A revision that older releases must not open also raises meta ``schema_version``:
releases before Alembic check only that number.
"""
