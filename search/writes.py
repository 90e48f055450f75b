"""The indexer's writes, as the store makes them: one batch of items in one transaction, with the
generation bumped once and stamped on every vector written, so a killed run loses at most the batch."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from .tables import (CAPTION, CAPTION_SLOT, CONTENT, CONTENT_SLOT, FAILED, FIRST_PART_SLOT, LAYOUT, MAX_SLOTS, OK,
                     PENDING, Item, Vector, vector_bytes)

COPIED = ("mime", "width", "height", "duration", "sample_rate", "channels", "taken_at", "text")


class Batch:
    def __init__(self, session: Session, generation: int):
        self.session = session
        self.generation = generation

    def item(self, row_id: int | None, path: str, modality: str, **file: Any) -> tuple[Item, bool]:
        """The item to write (the stored row, or a new pending one) with the file's facts (size, mtime_ns,
        content_hash, caption), and whether it moved to ``path``."""
        item = self.session.get(Item, row_id) if row_id is not None else None
        moved = item is not None and item.path != path
        if item is None:
            item = Item(path=path, modality=modality, status=PENDING)
            self.session.add(item)
        item.path, item.modality = path, modality
        for column, value in file.items():
            setattr(item, column, value)
        item.indexed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return item, moved

    def fail(self, item: Item, error: str) -> None:
        item.status, item.error = FAILED, error
        if item.id is not None:
            self.session.execute(delete(Vector).where(Vector.item_id == item.id))

    def copy_of(self, item: Item, source_id: int) -> tuple[np.ndarray | None, list[Part]]:
        """A copy of an indexed file: its metadata, and its content vector and parts to reuse (no decoding)."""
        source = self.session.get(Item, source_id)
        for column in COPIED:
            setattr(item, column, getattr(source, column))
        rows = self.session.scalars(select(Vector).where(Vector.item_id == source_id, Vector.slot != CAPTION_SLOT)
                                    .order_by(Vector.slot)).all()
        content = next((row.array() for row in rows if row.slot == CONTENT_SLOT), None)
        return content, [Part(row.kind, row.span_start, row.span_end, row.array()) for row in rows
                         if row.slot >= FIRST_PART_SLOT]

    def describe(self, item: Item, meta: dict[str, Any], text: str | None) -> None:
        for column in COPIED[:-1]:
            setattr(item, column, meta.get(column))
        item.text = text

    def content(self, item: Item, vector: np.ndarray | None, encoder: str, waiting: str,
                parts: Sequence[Part] = ()) -> None:
        """The item's own vector and its passages or segments (which replace the ones it had); without a
        vector it waits (``waiting`` says for what) and keeps none."""
        self.session.flush()  # a new item needs its id before its vector
        if vector is None:
            item.status, item.error = PENDING, waiting
            self.session.execute(delete(Vector).where(Vector.item_id == item.id))
            return
        if len(parts) > MAX_SLOTS - FIRST_PART_SLOT:
            raise ValueError(f"an item has at most {MAX_SLOTS - FIRST_PART_SLOT} passages or segments")
        item.status, item.error, item.layout = OK, None, LAYOUT
        self._vector(item.id, CONTENT_SLOT, CONTENT, encoder, vector)
        self.session.execute(delete(Vector).where(Vector.item_id == item.id, Vector.slot >= FIRST_PART_SLOT))
        rows = [{"item_id": item.id, "slot": slot, **self._row(part.kind, encoder, part.vector, part.start, part.end)}
                for slot, part in enumerate(parts, start=FIRST_PART_SLOT)]
        if rows:  # one statement for all of them (a long sound has hundreds)
            self.session.execute(insert(Vector), rows)

    def caption(self, row_id: int | None, path: str, vector: np.ndarray | None, encoder: str) -> None:
        """Keep the caption vector in step with the item's caption; the index re-fuses the item on its next
        sync."""
        item = self.session.get(Item, row_id) if row_id is not None else \
            self.session.scalar(select(Item).where(Item.path == path))
        if item is None or item.status != OK:
            return
        if vector is not None:
            self._vector(item.id, CAPTION_SLOT, CAPTION, encoder, vector)
        elif item.caption is None and self.session.get(Vector, (item.id, CAPTION_SLOT)) is not None:
            self.session.execute(delete(Vector).where(Vector.item_id == item.id, Vector.slot == CAPTION_SLOT))
            # the content row carries the change: a catch-up re-reads items with a newer row
            self.session.execute(update(Vector).where(Vector.item_id == item.id).values(generation=self.generation))

    def _vector(self, item_id: int, slot: int, kind: str, encoder: str, vector: np.ndarray) -> None:
        self.session.merge(Vector(item_id=item_id, slot=slot, **self._row(kind, encoder, vector)))

    def _row(self, kind: str, encoder: str, vector: np.ndarray, start: float | None = None,
             end: float | None = None) -> dict[str, Any]:
        return dict(kind=kind, span_start=start, span_end=end, encoder=encoder, dim=len(vector),
                    data=vector_bytes(vector), generation=self.generation)


@dataclass
class Part:
    """A passage (span: characters) or a segment (span: seconds) of an item, with its vector."""

    kind: str
    start: float | None
    end: float | None
    vector: np.ndarray
