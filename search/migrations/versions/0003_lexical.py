"""A full-text index over each item's file name (items.name_terms: the base name split into words), path,
caption and text, kept by the database in the same transaction as the rows (search/lexical.py searches it).

SQLite: an FTS5 table over items (external content: the words stay in items) fed by triggers; updates
re-index an item only when one of its four indexed columns changes, not when its status does.
PostgreSQL: a generated tsvector column with a GIN index.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

from mmsearch.search.lexical import name_terms

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = "name_terms, path, caption, text"
OLD = "old.id, old.name_terms, old.path, old.caption, old.text"
NEW = "new.id, new.name_terms, new.path, new.caption, new.text"
SQLITE = [
    f"CREATE VIRTUAL TABLE items_fts USING fts5({COLUMNS}, content='items', content_rowid='id', "
    f"tokenize='porter unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN "
    f"INSERT INTO items_fts (rowid, {COLUMNS}) VALUES ({NEW}); END",
    f"CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN "
    f"INSERT INTO items_fts (items_fts, rowid, {COLUMNS}) VALUES ('delete', {OLD}); END",
    f"CREATE TRIGGER items_fts_update AFTER UPDATE OF {COLUMNS} ON items BEGIN "
    f"INSERT INTO items_fts (items_fts, rowid, {COLUMNS}) VALUES ('delete', {OLD}); "
    f"INSERT INTO items_fts (rowid, {COLUMNS}) VALUES ({NEW}); END",
    "INSERT INTO items_fts (items_fts) VALUES ('rebuild')",
]
# Names and paths as 'simple' words (no stemming: file names hold made-up words), the path's separators
# made spaces first (PostgreSQL's parser would keep "/a/b-c.jpg" as one file token); caption and text stemmed.
POSTGRESQL = [
    "ALTER TABLE items ADD COLUMN search_terms tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('simple', coalesce(name_terms, '')), 'A') || "
    "setweight(to_tsvector('simple', translate(coalesce(path, ''), '/\\._-:', '      ')), 'B') || "
    "setweight(to_tsvector('english', coalesce(caption, '')), 'A') || "
    "to_tsvector('english', coalesce(text, ''))) STORED",
    "CREATE INDEX ix_items_search_terms ON items USING gin (search_terms)",
]


def upgrade() -> None:
    op.add_column("items", sa.Column("name_terms", sa.Text()))  # ALTER TABLE ADD COLUMN: items is not copied
    connection = op.get_bind()
    items = sa.table("items", sa.column("id", sa.Integer()), sa.column("path", sa.Text()),
                     sa.column("name_terms", sa.Text()))
    update = items.update().where(items.c.id == sa.bindparam("item_id")).values(name_terms=sa.bindparam("terms"))
    last = 0
    while True:  # in chunks of ids, so a large collection is never held in memory at once
        rows = connection.execute(sa.select(items.c.id, items.c.path).where(items.c.id > last)
                                  .order_by(items.c.id).limit(5000)).all()
        if not rows:
            break
        connection.execute(update, [{"item_id": i, "terms": name_terms(path)} for i, path in rows])
        last = rows[-1][0]
    for statement in SQLITE if connection.dialect.name == "sqlite" else POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER items_fts_{trigger}")
        op.execute("DROP TABLE items_fts")
        op.execute("ALTER TABLE items DROP COLUMN name_terms")  # SQLite >= 3.35, in place: AUTOINCREMENT kept
    else:
        op.drop_index("ix_items_search_terms", "items")
        op.drop_column("items", "search_terms")
        op.drop_column("items", "name_terms")
