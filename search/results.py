"""The one serialiser of items and search results: the documents that `search --json`, `GET /api/items/ID`
and `/api/search` return. The web layer adds its URLs through ``links``; nothing here knows HTTP. Tags come
from the caller (``store.tags.of``, one query for a whole page of results); an item without any has no "tags"."""
from __future__ import annotations

import datetime as dt
import os
from typing import Any, Callable, Mapping, Sequence

from .query import SearchResponse
from .request import SearchRequest
from .tables import Item
from .tags import Tag, TagSet

SNIPPET_CHARS = 240
Links = Callable[[Item], dict[str, Any]]  # e.g. media_url and thumbnail_url of an item, in the web API


def _utc(value: dt.datetime | None) -> str | None:
    """Stored datetimes are naive UTC; written with their offset so nobody reads them as local time."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()


def metadata(item: Item) -> dict[str, Any]:
    out = {key: getattr(item, key) for key in ("mime", "size", "width", "height", "duration", "sample_rate",
                                               "channels", "status")}
    out["modified"] = dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.timezone.utc).isoformat()
    out["taken_at"] = item.taken_at.isoformat() if item.taken_at else None  # camera time: no zone known
    out["indexed_at"] = _utc(item.indexed_at)
    if item.error:
        out["error"] = item.error
    return {k: v for k, v in out.items() if v is not None}


def item_document(item: Item, score: float | None = None, parts: list | None = None, full: bool = False,
                  links: Links | None = None, match: dict | None = None, tags: Sequence[Tag] | None = None
                  ) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item.id, "path": item.path, "modality": item.modality}
    if score is not None:
        out["score"] = score
    if links is not None:
        out.update(links(item))
    out["name"] = os.path.basename(item.path)
    if item.caption:
        out["caption"] = item.caption
    if item.text:
        out["snippet"] = item.text[:SNIPPET_CHARS] + ("…" if len(item.text) > SNIPPET_CHARS else "")
        if full:
            out["text"] = item.text
    if tags:
        out["tags"] = [{"set": tag.set, "label": tag.label, "score": tag.score} for tag in tags]
    out["metadata"] = metadata(item)
    if match is not None:
        out["match"] = match
    if parts is not None:
        out["parts"] = parts
    return out


def response_document(response: SearchResponse, request: SearchRequest, links: Links | None = None,
                      tags: Mapping[int, Sequence[Tag]] | None = None) -> dict[str, Any]:
    """``tags``: the results' tags by item id (store.tags.of of the results' ids)."""
    tags = tags or {}
    document: dict[str, Any] = {
        "results": [item_document(hit.item, hit.score, hit.parts, links=links, match=hit.match, tags=tags.get(hit.id))
                    for hit in response.results],
        "took_ms": round(response.took_ms, 3),
        "fusion": request.fusion,
        "index": response.index,
    }
    if response.next_offset is not None:
        document["next"] = response.next_offset
    if request.explain:
        document["parts"] = response.parts
    return document


def tag_sets_document(sets: Sequence[TagSet]) -> dict[str, Any]:
    """store.tags.sets() as GET /api/tags returns it: each set's labels with their item counts, most common
    first."""
    return {"sets": [{"name": s.name, "kind": s.kind, "items": s.items, "updated_at": _utc(s.updated_at),
                      "labels": [{"label": label, "count": count} for label, count in s.labels.items()]}
                     for s in sets]}
