"""Tags: labels with scores that a classifier gave items, in named tag sets (``store.tags``). A zero-shot set
(prompts against the item vectors) or a trained one records what made it (``config``, JSON) so items indexed
later can be tagged the same way. Tags filter searches (search.filters), come with results (search.results)
and join the full-text index: ``items.tag_terms`` holds each item's labels, kept here in the transaction that
writes its tags (the database's full-text index follows it, search.lexical).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import numbers
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from mmsearch.errors import MMSearchError, NotFoundError

from .tables import Item, TagRow, TagSetRow

KINDS = ("zero-shot", "trained")
MAX_NAME = 200  # characters of a label or a set's name (search.request.MAX_LABEL_CHARS)
CHUNK = 5000  # rows checked and written per statement: a stream of millions is never all in memory
IDS = 500  # ids per IN list (databases cap bound parameters)


class Tag(NamedTuple):
    set: str
    label: str
    score: float


class TagSet(NamedTuple):
    name: str
    kind: str
    config: dict
    items: int  # items with at least one tag of the set
    labels: dict[str, int]  # label -> items with it, most common first (then by label)
    updated_at: dt.datetime  # naive UTC, as the store keeps datetimes


def check_text(what: str, value: Any) -> str:
    """A label or a set name: a non-blank string of at most MAX_NAME characters, no control characters."""
    if not isinstance(value, str) or not value.strip():
        raise MMSearchError(f"a tag {what} must be a non-empty string, not {str(value)[:40]!r}")
    if len(value) > MAX_NAME:
        raise MMSearchError(f"a tag {what} is at most {MAX_NAME} characters, not {len(value)}: {value[:40]!r}…")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) < 0xE000 for c in value):
        raise MMSearchError(f"a tag {what} must not contain control characters: {value[:40]!r}")
    return value


class Tags:
    """The tag sets of one store, and their tags; every write is one transaction."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def replace(self, name: str, kind: str, config: dict, rows: Iterable[tuple[int, str, float]],
                items: Sequence[int] | None = None) -> int:
        """Create or update the set ``name`` (its kind and config) and its tags, in one transaction: with
        ``items`` None the set's tags are exactly ``rows`` afterwards; else only those items' tags of this set
        are replaced (rows must be of those items). Refuses, writing nothing, a bad name, label, kind or config,
        a score that is not a finite number, an unknown item id, and a (item, label) given twice. Returns the
        number of rows written."""
        name = check_text("set name", name)
        if kind not in KINDS:
            raise MMSearchError(f"a tag set's kind is {' or '.join(KINDS)}, not {str(kind)[:40]!r}")
        if not isinstance(config, dict):
            raise MMSearchError("a tag set's config must be a dict (JSON object)")
        try:
            config_text = json.dumps(config, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise MMSearchError(f"a tag set's config must be JSON: {exc}") from None
        only = None if items is None else {_item_id(i) for i in items}
        with self.store.session() as session:
            if only:
                _known(session, only)
            row = session.scalar(select(TagSetRow).where(TagSetRow.name == name))
            if row is None:
                row = TagSetRow(name=name)
                session.add(row)
            row.kind, row.config, row.updated_at = kind, config_text, _now()
            session.flush()
            held = select(TagRow.item_id).where(TagRow.set_id == row.id)
            touched: set[int] = set()
            if only is None:
                touched.update(session.scalars(held.distinct()))
                session.execute(delete(TagRow).where(TagRow.set_id == row.id))
            elif only:
                touched.update(only)
                for chunk in _chunks(sorted(only), IDS):
                    session.execute(delete(TagRow).where(TagRow.set_id == row.id, TagRow.item_id.in_(chunk)))
            written = 0
            seen: set[tuple[int, str]] = set()
            for chunk in _chunks(rows, CHUNK):
                checked = [_row(n, r) for n, r in enumerate(chunk, start=written + 1)]
                _known(session, {i for i, _, _ in checked} - touched)
                for n, (item_id, label, _) in enumerate(checked, start=written + 1):
                    if only is not None and item_id not in only:
                        raise MMSearchError(f"tag row {n}: item {item_id} is not among the items being tagged")
                    if (item_id, label) in seen:
                        raise MMSearchError(f"tag row {n}: item {item_id} has the label {label!r} twice")
                    seen.add((item_id, label))
                    touched.add(item_id)
                session.execute(insert(TagRow.__table__), [{"set_id": row.id, "item_id": i, "label": label,
                                                            "score": score} for i, label, score in checked])
                written += len(checked)
            _retag(session, touched)
        return written

    def sets(self) -> list[TagSet]:
        """Every tag set, by name."""
        with self.store.session() as session:
            return _describe(session, session.scalars(select(TagSetRow).order_by(TagSetRow.name)).all())

    def get(self, name: str) -> TagSet | None:
        with self.store.session() as session:
            found = _describe(session, session.scalars(select(TagSetRow).where(TagSetRow.name == name)).all())
        return found[0] if found else None

    def check(self, name: str) -> str:
        """``name`` when a tag set is called that, else an error naming the sets there are (one cheap query:
        searches filtered by a set check it first, so an unknown name is an error, not an empty page)."""
        with self.store.session() as session:
            names = list(session.scalars(select(TagSetRow.name).order_by(TagSetRow.name)))
        if name not in names:
            known = ", ".join(repr(n) for n in names[:20]) + (f", … {len(names) - 20} more" if len(names) > 20
                                                              else "")
            raise NotFoundError(f"no tag set {str(name)[:80]!r}; " + (f"the tag sets are {known}" if names else
                                "there are none yet (make one with 'mmsearch classify' or 'train-classifier')"))
        return name

    def of(self, item_ids: Sequence[int]) -> dict[int, list[Tag]]:
        """Each item's tags, of every set, best score first; items without tags are left out. One query per
        500 ids."""
        out: dict[int, list[Tag]] = {}
        ids = sorted({int(i) for i in item_ids})
        with self.store.session() as session:
            for chunk in _chunks(ids, IDS):
                for item_id, set_name, label, score in session.execute(
                        select(TagRow.item_id, TagSetRow.name, TagRow.label, TagRow.score).join(TagSetRow)
                        .where(TagRow.item_id.in_(chunk))
                        .order_by(TagRow.item_id, TagRow.score.desc(), TagRow.label, TagSetRow.name)):
                    out.setdefault(item_id, []).append(Tag(set_name, label, float(score)))
        return out

    def delete(self, name: str) -> bool:
        """Drop a tag set and its tags; False when there was none of that name."""
        with self.store.session() as session:
            set_id = session.scalar(select(TagSetRow.id).where(TagSetRow.name == name))
            if set_id is None:
                return False
            touched = set(session.scalars(select(TagRow.item_id).where(TagRow.set_id == set_id).distinct()))
            session.execute(delete(TagRow).where(TagRow.set_id == set_id))
            session.execute(delete(TagSetRow).where(TagSetRow.id == set_id))
            _retag(session, touched)
        return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _item_id(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, numbers.Integral) or not 0 < int(raw) < 2 ** 63:
        raise MMSearchError(f"a tagged item's id is a positive integer, not {str(raw)[:40]!r}")
    return int(raw)


def _row(n: int, raw: Any) -> tuple[int, str, float]:
    try:
        item_id, label, score = raw
    except (TypeError, ValueError):
        raise MMSearchError(f"tag row {n} must be (item id, label, score)") from None
    try:
        label = check_text("label", label)
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(float(score)):
            raise MMSearchError(f"a tag's score must be a finite number, not {str(score)[:40]!r}")
        return _item_id(item_id), label, float(score)
    except MMSearchError as exc:
        raise MMSearchError(f"tag row {n}: {exc}") from None


def _chunks(values: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _known(session: Session, ids: set[int]) -> None:
    """Refuse ids that are no item's."""
    for chunk in _chunks(sorted(ids), IDS):
        found = set(session.scalars(select(Item.id).where(Item.id.in_(chunk))))
        missing = [i for i in chunk if i not in found]
        if missing:
            raise MMSearchError(f"no item with id {missing[0]}: nothing was tagged")


def _retag(session: Session, ids: set[int]) -> None:
    """items.tag_terms of these items from their tags (every set's labels, each once, best first; NULL for
    none): the full-text index follows the column."""
    for chunk in _chunks(sorted(ids), IDS):
        labels: dict[int, list[str]] = {i: [] for i in chunk}
        for item_id, label in session.execute(select(TagRow.item_id, TagRow.label).where(TagRow.item_id.in_(chunk))
                                              .order_by(TagRow.item_id, TagRow.score.desc(), TagRow.label)):
            if label not in labels[item_id]:
                labels[item_id].append(label)
        held = dict(session.execute(select(Item.id, Item.tag_terms).where(Item.id.in_(chunk))).all())
        # only rows whose words change: each update re-indexes the row's full text (the FTS5 triggers), the
        # larger part of tagging 100k items (benchmarks/tagging.py)
        changed = [{"key": i, "terms": terms} for i, words in labels.items()
                   if (terms := " ".join(words) or None) != held.get(i)]
        if changed:
            session.execute(update(Item.__table__).where(Item.__table__.c.id == bindparam("key"))
                            .values(tag_terms=bindparam("terms")), changed)


def _describe(session: Session, rows: Sequence[TagSetRow]) -> list[TagSet]:
    if not rows:
        return []
    ids = [row.id for row in rows]
    items = dict(session.execute(select(TagRow.set_id, func.count(TagRow.item_id.distinct()))
                                 .where(TagRow.set_id.in_(ids)).group_by(TagRow.set_id)).all())
    labels: dict[int, dict[str, int]] = {i: {} for i in ids}
    for set_id, label, count in session.execute(
            select(TagRow.set_id, TagRow.label, func.count()).where(TagRow.set_id.in_(ids))
            .group_by(TagRow.set_id, TagRow.label).order_by(TagRow.set_id, func.count().desc(), TagRow.label)):
        labels[set_id][label] = int(count)
    return [TagSet(row.name, row.kind, json.loads(row.config), int(items.get(row.id, 0)), labels[row.id],
                   row.updated_at) for row in rows]
