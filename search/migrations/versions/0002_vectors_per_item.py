"""Many vectors per item: vectors keyed by (item_id, slot) with a kind (content, caption, passage, segment)
and a span (characters of a passage, seconds of a segment); items.layout says whether an item's passages or
segments have been made (NULL: before they existed; the next index run makes them).

The part column becomes kind; content keeps slot 0 and caption slot 1, so every stored vector is kept.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("layout", sa.Integer()))  # ALTER TABLE ADD COLUMN: items is not copied
    # The primary key changes, which neither database alters in place: a new table, filled, renamed.
    op.create_table(
        "vectors_new",
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("span_start", sa.Float()),
        sa.Column("span_end", sa.Float()),
        sa.Column("encoder", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO vectors_new (item_id, slot, kind, encoder, dim, data, generation) "
               "SELECT item_id, CASE part WHEN 'content' THEN 0 ELSE 1 END, part, encoder, dim, data, generation "
               "FROM vectors WHERE part IN ('content', 'caption')")
    op.drop_index("ix_vectors_generation", "vectors")
    op.drop_table("vectors")
    op.rename_table("vectors_new", "vectors")
    op.create_index("ix_vectors_generation", "vectors", ["generation"])
    # Images have no passages or segments: their vectors are already complete
    op.execute("UPDATE items SET layout = 2 WHERE modality = 'image' AND status = 'ok'")


def downgrade() -> None:
    op.create_table(
        "vectors_old",
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("part", sa.String(32), primary_key=True),
        sa.Column("encoder", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO vectors_old (item_id, part, encoder, dim, data, generation) "
               "SELECT item_id, kind, encoder, dim, data, generation FROM vectors WHERE slot < 2")
    op.drop_index("ix_vectors_generation", "vectors")
    op.drop_table("vectors")
    op.rename_table("vectors_old", "vectors")
    op.create_index("ix_vectors_generation", "vectors", ["generation"])
    with op.batch_alter_table("items", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("layout")
