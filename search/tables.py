"""The tables of the SQL store (SQLAlchemy 2 ORM) and the words their rows use. The schema is created
and upgraded by the Alembic revisions in search/migrations, which must match these declarations."""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np
from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from . import lexical

OK, PENDING, FAILED = "ok", "pending", "failed"
CONTENT = "content"  # the item's own modality: pixels, words (a note's opening) or sound (all of it, pooled)
CAPTION = "caption"  # the text of a caption sidecar, embedded by the text tower
PASSAGE = "passage"  # a window of a long note that fits the text tower; span: its character range
SEGMENT = "segment"  # a window of a long sound; span: its start and end in seconds
KINDS = (CONTENT, CAPTION, PASSAGE, SEGMENT)
FUSED = "fused"  # the main index as a whole (every modality's part)
LAYOUT = 2  # items.layout of an item whose vectors include its passages or segments (1: before they existed)

# A vector's id in the vector index: its item's id and its slot (0 content, 1 caption, 2… passages or
# segments in order), so the index maps a hit to its item with a shift and needs no lookup table.
SLOT_BITS = 20
MAX_SLOTS = 1 << SLOT_BITS  # vectors per item (a 100k-character note has ~400 passages)
MAX_ITEM_ID = (1 << (63 - SLOT_BITS)) - 1
CONTENT_SLOT, CAPTION_SLOT, FIRST_PART_SLOT = 0, 1, 2


def vector_id(item_id, slot):
    """The vector index id of an item's vector (ints or numpy arrays)."""
    return (item_id << SLOT_BITS) | slot


def item_of(vector_ids):
    """The item ids of vector index ids (ints or numpy int64 arrays)."""
    return vector_ids >> SLOT_BITS


def slot_of(vector_ids):
    return vector_ids & (MAX_SLOTS - 1)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused: caches and URLs keep meaning

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(80), index=True)
    mime: Mapped[str | None] = mapped_column(String(100))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    caption: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime)
    layout: Mapped[int | None] = mapped_column(Integer)  # LAYOUT once its passages or segments are made
    # The file name's words, for full-text search: set with path (the validator below), and by bulk inserts
    name_terms: Mapped[str | None] = mapped_column(Text, default=lambda context: lexical.name_terms(
        context.get_current_parameters().get("path")))
    tag_terms: Mapped[str | None] = mapped_column(Text)  # its tags' labels, for full-text search (search.tags)

    vectors: Mapped[list["Vector"]] = relationship(back_populates="item", cascade="all, delete-orphan",
                                                   passive_deletes=True)

    @validates("path")
    def _keep_name_terms(self, _key: str, path: str) -> str:
        """Every writer of an item's path writes its name's words with it (search.lexical.name_terms); a bulk
        UPDATE statement that changes paths must set name_terms itself."""
        self.name_terms = lexical.name_terms(path)
        return path


class Vector(Base):
    __tablename__ = "vectors"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))  # KINDS
    span_start: Mapped[float | None] = mapped_column(Float)  # passages: characters; segments: seconds
    span_end: Mapped[float | None] = mapped_column(Float)
    encoder: Mapped[str] = mapped_column(String(200))
    dim: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    generation: Mapped[int] = mapped_column(BigInteger, index=True)

    item: Mapped[Item] = relationship(back_populates="vectors")

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype="<f4")


class TagSetRow(Base):
    """A named set of tags and what made it (search.tags): a classifier's kind and its config as JSON, so items
    indexed later can be tagged the same way."""

    __tablename__ = "tag_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # search.tags.KINDS
    config: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class TagRow(Base):
    """One label of one tag set on one item, with its score."""

    __tablename__ = "tags"

    set_id: Mapped[int] = mapped_column(ForeignKey("tag_sets.id", ondelete="CASCADE"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True, index=True)
    label: Mapped[str] = mapped_column(Text, primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)


class Meta(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class StoredVector(NamedTuple):
    """A vector row as the store reads it back (store.part_vectors)."""

    item_id: int
    slot: int
    kind: str
    start: float | None  # passages: characters; segments: seconds
    end: float | None
    vector: np.ndarray | None
