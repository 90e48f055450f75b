"""The schema of the releases before Alembic (meta schema_version 1): items, vectors, meta.

Written out rather than taken from the ORM, so it stays what those releases made when the ORM moves on.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(80)),
        sa.Column("mime", sa.String(100)),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("duration", sa.Float()),
        sa.Column("sample_rate", sa.Integer()),
        sa.Column("channels", sa.Integer()),
        sa.Column("taken_at", sa.DateTime()),
        sa.Column("caption", sa.Text()),
        sa.Column("text", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("path"),
        sqlite_autoincrement=True,  # ids are never reused: caches and URLs keep meaning
    )
    for column in ("modality", "content_hash", "status"):
        op.create_index(f"ix_items_{column}", "items", [column])
    op.create_table(
        "vectors",
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("part", sa.String(32), primary_key=True),
        sa.Column("encoder", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_vectors_generation", "vectors", ["generation"])
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    # What the store wrote into a new database before Alembic; values are JSON
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}, {"key": "generation", "value": "0"}])


def downgrade() -> None:
    for table in ("meta", "vectors", "items"):
        op.drop_table(table)
