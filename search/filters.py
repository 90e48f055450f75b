"""Search filters as SQL: the WHERE clauses that pick the items a search may return, evaluated with the
vector search (an id selector) so a filter never shrinks a page after truncation."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, func, select

from .tables import OK, Item, TagRow, TagSetRow


def filter_query(filters: Any, sqlite: bool) -> Select:
    """Ids of the ok items that pass ``filters`` (a search.request.Filters)."""
    query = select(Item.id).where(Item.status == OK)
    if filters.modalities:
        query = query.where(Item.modality.in_(list(filters.modalities)))
    if filters.path_prefix:
        prefix = filters.path_prefix
        # Exact on every database; the range lets SQLite (byte order) use the path index, while a
        # database with a linguistic collation would let other paths into it.
        query = query.where(func.substr(Item.path, 1, len(prefix)) == prefix)
        if sqlite:
            query = query.where(Item.path >= prefix, Item.path < prefix + "\U0010ffff")
    if filters.path_glob:  # fnmatch's case-sensitive * and ?, which cross folders
        query = query.where(Item.path.op("GLOB")(filters.path_glob.replace("[", "[[]")) if sqlite
                            else Item.path.like(_glob_to_like(filters.path_glob), escape="\\"))
    if filters.date_field == "taken_at":
        if filters.date_from:
            query = query.where(Item.taken_at >= filters.date_from)
        if filters.date_to:
            query = query.where(Item.taken_at <= filters.date_to)
    else:
        if filters.date_from:
            query = query.where(Item.mtime_ns >= _ns(filters.date_from))
        if filters.date_to:
            query = query.where(Item.mtime_ns <= _ns(filters.date_to))
    if filters.min_size is not None:
        query = query.where(Item.size >= filters.min_size)
    if filters.max_size is not None:
        query = query.where(Item.size <= filters.max_size)
    if filters.has_caption is not None:
        query = query.where(Item.caption.is_not(None) if filters.has_caption else Item.caption.is_(None))
    if filters.tags or filters.tag_set:
        query = query.where(*_tagged(filters.tags or [None], filters.tag_set))
    return query


def _tagged(labels: list[str | None], tag_set: str | None) -> list:
    """One EXISTS per label (None: any label): the item has it, in any set or in ``tag_set`` (search.tags)."""
    conditions = []
    for label in labels:
        tagged = select(TagRow.item_id).where(TagRow.item_id == Item.id)
        if label is not None:
            tagged = tagged.where(TagRow.label == label)
        if tag_set is not None:
            tagged = tagged.where(TagRow.set_id == select(TagSetRow.id).where(TagSetRow.name == tag_set)
                                  .scalar_subquery())
        conditions.append(tagged.exists())
    return conditions


def _glob_to_like(glob: str) -> str:
    """fnmatch's * and ? to a LIKE pattern (case-sensitive everywhere but in SQLite, which uses GLOB)."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _ns(when: dt.datetime) -> int:
    """A date as file times are stored (ns since 1970), held inside BIGINT: any year can be asked for, and
    one past 2262 or before 1677 keeps everything or nothing instead of overflowing the database."""
    try:
        seconds = when.timestamp()  # a date without a zone is local time, as the files' own times are shown
    except (OverflowError, OSError, ValueError):  # years 1 and 9999 may not convert in every zone
        seconds = (when.replace(tzinfo=None) - dt.datetime(1970, 1, 1)).total_seconds()
    return max(-2 ** 63, min(2 ** 63 - 1, int(seconds * 1e9)))
