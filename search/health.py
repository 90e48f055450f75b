"""The store's health figures: counts of items and vectors, and the ways SQL can disagree with itself that
`verify` reports (vectors of another model, items without a vector, vectors out of place, items still to
be completed with their passages or segments)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mmsearch.modalities import MODALITIES

from .tables import (CAPTION, CAPTION_SLOT, CONTENT, CONTENT_SLOT, FAILED, FIRST_PART_SLOT, KINDS, LAYOUT, OK,
                     PASSAGE, PENDING, SEGMENT, Item, Vector)


def counts(session: Session) -> dict[str, Any]:
    by_status = dict(session.execute(select(Item.status, func.count()).group_by(Item.status)).all())
    by_modality = dict(session.execute(select(Item.modality, func.count()).where(Item.status != FAILED)
                                       .group_by(Item.modality)).all())
    by_kind = dict(session.execute(select(Vector.kind, func.count()).group_by(Vector.kind)).all())
    return {
        "items": sum(n for status, n in by_status.items() if status != FAILED),
        "by_modality": {m: by_modality.get(m, 0) for m in MODALITIES},
        "pending": by_status.get(PENDING, 0),
        "failed": by_status.get(FAILED, 0),
        "vectors": {kind: by_kind.get(kind, 0) for kind in KINDS},
        "waiting_for_parts": waiting_for_parts(session),  # the next index run makes their passages/segments
    }


def waiting_for_parts(session: Session) -> int:
    """Notes and sounds indexed before passages and segments existed (items.layout below LAYOUT)."""
    return int(session.scalar(select(func.count()).select_from(Item).where(
        Item.status == OK, Item.modality.in_(("text", "audio")), func.coalesce(Item.layout, 0) < LAYOUT)))


def vector_problems(session: Session, encoder: str, dim: int, audio_key: str | None) -> list[str]:
    """Vectors from another encoder (sounds' own and their segments from the audio tower ``audio_key``,
    all others from ``encoder``) or of another dimension; ok items without a vector; slots of the wrong
    kind or spans outside their item; items still waiting for their passages or segments."""
    problems: list[str] = []
    own_audio = Vector.kind.in_((CONTENT, SEGMENT)) & (Item.modality == "audio")
    expected = own_audio & (Vector.encoder == audio_key) | ~own_audio & (Vector.encoder == encoder)
    wrong = session.scalar(select(func.count()).select_from(Vector).join(Item).where(
        (Vector.dim != dim) | ~expected))
    if wrong:
        problems.append(f"{wrong} vectors were made by another model or have the wrong dimension")
    orphans = session.scalar(select(func.count()).select_from(Item).where(
        Item.status == OK, ~Item.vectors.any(Vector.slot == CONTENT_SLOT)))
    if orphans:
        problems.append(f"{orphans} items marked ok have no vector")
    part = (Vector.slot >= FIRST_PART_SLOT) & (Vector.span_start >= 0) & (Vector.span_start < Vector.span_end)
    in_place = ((Vector.slot == CONTENT_SLOT) & (Vector.kind == CONTENT)
                | (Vector.slot == CAPTION_SLOT) & (Vector.kind == CAPTION)
                | part & (Vector.kind == PASSAGE) & (Item.modality == "text")
                & (Vector.span_end <= func.length(Item.text))
                | part & (Vector.kind == SEGMENT) & (Item.modality == "audio")
                & (Vector.span_end <= func.coalesce(Item.duration, 0) + 1e-3))
    misplaced = session.scalar(select(func.count()).select_from(Vector).join(Item).where(~in_place))
    if misplaced:
        problems.append(f"{misplaced} vectors are of the wrong kind for their slot or item, or their span lies "
                        f"outside it")
    waiting = waiting_for_parts(session)
    if waiting:
        problems.append(f"{waiting} items were indexed before passages and segments existed: run "
                        f"'mmsearch index' to make them")
    return problems
