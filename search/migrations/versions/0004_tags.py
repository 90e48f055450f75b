"""Tags: named tag sets (what made them: a zero-shot or a trained classifier, and its config) and each item's
labels with their scores (search/tags.py); items.tag_terms, the item's labels as words, joins the full-text
index of hybrid search.

SQLite: the FTS5 table items_fts and its triggers are made again with the fifth column (an FTS5 table takes no
new column), then rebuilt from the items. PostgreSQL: the generated tsvector items.search_terms is made again
with the labels in it (a generated column's expression cannot be altered before PostgreSQL 17).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BEFORE = ("name_terms", "path", "caption", "text")  # revision 0003's indexed columns
AFTER = BEFORE + ("tag_terms",)


def _sqlite(columns: tuple[str, ...]) -> list[str]:
    """The full-text table over ``columns`` and the triggers that keep it in step with items, as 0003 made them."""
    names = ", ".join(columns)
    old = ", ".join(["old.id"] + [f"old.{c}" for c in columns])
    new = ", ".join(["new.id"] + [f"new.{c}" for c in columns])
    return [
        f"CREATE VIRTUAL TABLE items_fts USING fts5({names}, content='items', content_rowid='id', "
        f"tokenize='porter unicode61 remove_diacritics 2')",
        f"CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN "
        f"INSERT INTO items_fts (rowid, {names}) VALUES ({new}); END",
        f"CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN "
        f"INSERT INTO items_fts (items_fts, rowid, {names}) VALUES ('delete', {old}); END",
        f"CREATE TRIGGER items_fts_update AFTER UPDATE OF {names} ON items BEGIN "
        f"INSERT INTO items_fts (items_fts, rowid, {names}) VALUES ('delete', {old}); "
        f"INSERT INTO items_fts (rowid, {names}) VALUES ({new}); END",
        "INSERT INTO items_fts (items_fts) VALUES ('rebuild')",
    ]


SQLITE_DROP = ["DROP TRIGGER items_fts_insert", "DROP TRIGGER items_fts_delete", "DROP TRIGGER items_fts_update",
               "DROP TABLE items_fts"]


def _postgresql(tags: bool) -> list[str]:
    """0003's generated tsvector, with the labels (weight A, stemmed as captions are) when ``tags``."""
    labels = "setweight(to_tsvector('english', coalesce(tag_terms, '')), 'A') || " if tags else ""
    return [
        "ALTER TABLE items ADD COLUMN search_terms tsvector GENERATED ALWAYS AS ("
        "setweight(to_tsvector('simple', coalesce(name_terms, '')), 'A') || "
        "setweight(to_tsvector('simple', translate(coalesce(path, ''), '/\\._-:', '      ')), 'B') || "
        "setweight(to_tsvector('english', coalesce(caption, '')), 'A') || " + labels +
        "to_tsvector('english', coalesce(text, ''))) STORED",
        "CREATE INDEX ix_items_search_terms ON items USING gin (search_terms)",
    ]


PG_DROP = ["DROP INDEX ix_items_search_terms", "ALTER TABLE items DROP COLUMN search_terms"]


def upgrade() -> None:
    op.create_table(
        "tag_sets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "tags",
        sa.Column("set_id", sa.Integer(), sa.ForeignKey("tag_sets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("label", sa.Text(), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
    )
    op.create_index("ix_tags_item_id", "tags", ["item_id"])
    op.create_index("ix_tags_label", "tags", ["label"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_DROP if sqlite else PG_DROP:
        op.execute(statement)
    op.add_column("items", sa.Column("tag_terms", sa.Text()))  # ALTER TABLE ADD COLUMN: items is not copied
    for statement in _sqlite(AFTER) if sqlite else _postgresql(tags=True):
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_DROP if sqlite else PG_DROP:
        op.execute(statement)
    if sqlite:
        op.execute("ALTER TABLE items DROP COLUMN tag_terms")  # SQLite >= 3.35, in place: AUTOINCREMENT kept
    else:
        op.drop_column("items", "tag_terms")
    for statement in _sqlite(BEFORE) if sqlite else _postgresql(tags=False):
        op.execute(statement)
    op.drop_index("ix_tags_label", "tags")
    op.drop_index("ix_tags_item_id", "tags")
    op.drop_table("tags")
    op.drop_table("tag_sets")
