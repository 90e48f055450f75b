"""JSON bodies, form fields and query strings → search.request.SearchRequest, with 400s for bad input.

The search text goes through the query syntax with ``allow_files=False``: a path in a query is
searched as words, never read. Image and sound parts arrive as uploaded files (multipart) or as
base64 strings (JSON); nothing here opens a file by name.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any, Mapping

from mmsearch.errors import MMSearchError
from search.request import FUSIONS, INDEXES, KINDS, MAX_K, MODALITIES, Filters, QueryPart, SearchRequest
from search.syntax import parse_query

FILTER_KEYS = ("path_prefix", "path_glob", "date_from", "date_to", "date_field", "min_size", "max_size",
               "has_caption")
OPTION_KEYS = ("text", "q", "like", "parts", "k", "offset", "modality", "filters", "fusion", "weights", "explain",
               "rrf_k", "exclude_self", "dedupe", "index") + FILTER_KEYS


class BadRequest(MMSearchError):
    """Input that does not have the right shape (400)."""


def item_id(raw: Any) -> int:
    """An item id from a URL segment or a field: digits only (so '../x', '/etc/passwd', '1.5' are refused)."""
    if isinstance(raw, bool):
        raise BadRequest("an item id is a positive integer")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 18:
        value = int(raw)
    else:
        raise BadRequest(f"an item id is a positive integer, not {str(raw)[:60]!r}")
    if value <= 0 or value >= 2 ** 63:
        raise BadRequest("an item id is a positive integer")
    return value


def _int(name: str, raw: Any, low: int, high: int | None = None) -> int:
    if isinstance(raw, bool):
        raise BadRequest(f"{name} must be an integer")
    if isinstance(raw, str):
        text = raw.strip()
        if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit()) or len(text) > 18:
            raise BadRequest(f"{name} must be an integer, not {raw[:40]!r}")
        raw = int(text)
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int):
        raise BadRequest(f"{name} must be an integer")
    if raw < low or (high is not None and raw > high):
        raise BadRequest(f"{name} must be an integer from {low}" + (f" to {high}" if high is not None else " up"))
    return raw


def _number(name: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise BadRequest(f"{name} must be a number")
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise BadRequest(f"{name} must be a number, not {raw[:40]!r}") from None
    if not isinstance(raw, (int, float)) or raw != raw or raw in (float("inf"), float("-inf")):
        raise BadRequest(f"{name} must be a finite number")
    return float(raw)


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(f"{name} must be true or false")


def _string(name: str, raw: Any, limit: int = 10_000) -> str:
    if not isinstance(raw, str):
        raise BadRequest(f"{name} must be a string")
    if len(raw) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters")
    if "\x00" in raw:
        raise BadRequest(f"{name} must not contain NUL characters")
    return raw


def _date(name: str, raw: Any) -> dt.datetime:
    text = _string(name, raw, 64)
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO date such as 2024-05-01 or 2024-05-01T12:00:00") from None


def modalities(raw: Any) -> list[str] | None:
    if raw is None or raw == "" or raw == []:
        return None
    values = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise BadRequest("modality must be a string or a list of strings")
        for piece in value.split(","):
            piece = piece.strip()
            if piece not in MODALITIES:
                raise BadRequest(f"unknown modality {piece[:40]!r}: use image, audio or text")
            if piece not in out:
                out.append(piece)
    return out or None


def filters(raw: Mapping[str, Any], mods: list[str] | None) -> Filters:
    if not isinstance(raw, Mapping):
        raise BadRequest("filters must be an object")
    unknown = set(raw) - set(FILTER_KEYS)
    if unknown:
        raise BadRequest(f"unknown filter(s): {', '.join(sorted(map(str, unknown)))[:200]}")
    values: dict[str, Any] = {"modalities": mods}
    for key, value in raw.items():
        if value is None or value == "":
            continue
        if key in ("path_prefix", "path_glob"):
            values[key] = _string(key, value, 4096)
        elif key in ("date_from", "date_to"):
            values[key] = _date(key, value)
        elif key == "date_field":
            values[key] = _string(key, value, 20)
        elif key in ("min_size", "max_size"):
            values[key] = _int(key, value, 0)
        elif key == "has_caption":
            values[key] = _bool(key, value)
    return Filters(**values)


def _b64(name: str, raw: Any) -> bytes:
    if not isinstance(raw, str):
        raise BadRequest(f"{name} must be a base64 string")
    if raw.startswith("data:") and "," in raw:  # a data: URL from a browser
        raw = raw.split(",", 1)[1]
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name} is not valid base64") from None


def json_part(n: int, raw: Any) -> QueryPart:
    where = f"parts[{n}]"
    if not isinstance(raw, Mapping):
        raise BadRequest(f"{where} must be an object with kind and value")
    unknown = set(raw) - {"kind", "value", "weight", "label"}
    if unknown:
        raise BadRequest(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))[:200]}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"{where}.kind must be one of {', '.join(KINDS)}")
    if "value" not in raw:
        raise BadRequest(f"{where} needs a value")
    weight = _number(f"{where}.weight", raw["weight"]) if raw.get("weight") is not None else 1.0
    value = raw["value"]
    if kind == "text":
        value = _string(f"{where}.value", value)
    elif kind == "item":
        value = item_id(value)
    else:
        value = _b64(f"{where}.value", value)
    label = raw.get("label")
    return QueryPart(kind, value, weight, _string(f"{where}.label", label, 200) if label else "")


def build(options: Mapping[str, Any], uploads: Mapping[str, bytes] | None = None, k_default: int = 10
          ) -> SearchRequest:
    """One SearchRequest from the merged options of a JSON body, a form or a query string."""
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}")
    parts: list[QueryPart] = []
    text = options.get("text", options.get("q"))
    if text is not None and text != "":
        parts += parse_query(_string("text", text), allow_files=False)
    if options.get("like") not in (None, ""):
        parts.append(QueryPart("item", item_id(options["like"])))
    raw_parts = options.get("parts")
    if raw_parts is not None:
        if not isinstance(raw_parts, list):
            raise BadRequest("parts must be a list")
        if len(raw_parts) > 32:
            raise BadRequest("at most 32 query parts")
        parts += [json_part(n, p) for n, p in enumerate(raw_parts)]
    for kind, data in (uploads or {}).items():
        parts.append(QueryPart(kind, data, 1.0, kind))
    if not parts:
        raise BadRequest("nothing to search for: give text, like, parts or an image/audio file")
    weights = options.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(parts):
            raise BadRequest(f"weights must be a list of {len(parts)} numbers, one per query part")
        for n, (part, weight) in enumerate(zip(parts, weights)):
            weight = _number(f"weights[{n}]", weight)
            parts[n] = QueryPart(part.kind, part.value, weight, part.label)
    mods = modalities(options.get("modality"))
    raw_filters = options.get("filters")
    if raw_filters is None:
        raw_filters = {}
    if not isinstance(raw_filters, Mapping):
        raise BadRequest("filters must be an object")
    raw_filters = dict(raw_filters)
    for key in FILTER_KEYS:  # form fields and query strings carry filters flat
        if key in options:
            raw_filters[key] = options[key]
    dedupe = options.get("dedupe")
    if dedupe not in (None, "", "hash"):
        dedupe = _number("dedupe", dedupe)
    fusion = options.get("fusion") or "early"
    if fusion not in FUSIONS:
        raise BadRequest(f"unknown fusion {str(fusion)[:40]!r}: use early, rrf, relative or dbsf")
    index = options.get("index") or None
    if index is not None and index not in INDEXES:
        raise BadRequest(f"unknown index {str(index)[:40]!r}: use fused or modality")
    return SearchRequest(
        parts=parts,
        k=_int("k", options["k"], 1, MAX_K) if options.get("k") not in (None, "") else k_default,
        offset=_int("offset", options["offset"], 0, 1_000_000) if options.get("offset") not in (None, "") else 0,
        filters=filters(raw_filters, mods),
        fusion=fusion,
        rrf_k=_int("rrf_k", options["rrf_k"], 1, 100_000) if options.get("rrf_k") not in (None, "") else 60,
        explain=_bool("explain", options["explain"]) if options.get("explain") is not None else False,
        exclude_self=_bool("exclude_self", options["exclude_self"]) if options.get("exclude_self") is not None
        else False,
        dedupe=dedupe or None,
        index=index,
    )
