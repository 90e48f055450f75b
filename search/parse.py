"""The one request builder: options from a JSON body, a form, a query string or the CLI's flags →
search.request.SearchRequest, with a one-line MMSearchError (a 400 in the API) for bad input.

Only the CLI passes ``allow_files=True``, so a path in its query text is read as an image or a sound;
for the API a query text is never a path. Image and sound parts arrive as file contents (uploads,
base64 in JSON, or files the CLI read), vector parts as lists of numbers; nothing here opens a file by name
on the API's behalf.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Any, Mapping, Sequence

from mmsearch.errors import MMSearchError
from mmsearch.modalities import check

from .request import (KINDS, MAX_FILTER_TAGS, MAX_ID, MAX_K, MAX_LABEL_CHARS, MAX_OFFSET, MAX_PATH_CHARS, MAX_RRF_K,
                      MAX_TEXT_CHARS, MAX_VECTOR_DIMS, Filters, Limits, QueryPart, SearchRequest, vector_value)
from .syntax import parse_query

FILTER_KEYS = ("path_prefix", "path_glob", "date_from", "date_to", "date_field", "min_size", "max_size",
               "has_caption", "tags", "tag_set")
LISTS = ("modality", "tags")  # the keys a query string or a form may repeat
OPTION_KEYS = ("text", "q", "like", "parts", "k", "offset", "modality", "filters", "fusion", "weights", "explain",
               "rrf_k", "exclude_self", "dedupe", "index", "hybrid", "alpha") + FILTER_KEYS
# the fields each form of API request takes (its OpenAPI schema): a query string has q and flat filters, a
# JSON body text and a filters object, a form text, flat filters or a filters object (JSON), and files
FIELDS = {"query": tuple(k for k in OPTION_KEYS if k not in ("text", "filters", "parts", "weights")),
          "json": tuple(k for k in OPTION_KEYS if k != "q" and k not in FILTER_KEYS),
          "form": tuple(k for k in OPTION_KEYS if k not in ("q", "parts", "weights"))}


class BadRequest(MMSearchError):
    """Input that does not have the right shape (400)."""


def item_id(raw: Any) -> int:
    """An item id from a URL segment or a field: digits only (so '../x', '/etc/passwd', '1.5' are refused)."""
    if isinstance(raw, bool):
        raise BadRequest("an item id is a positive integer")
    if isinstance(raw, float) and raw.is_integer():  # JSON's 2.0 is the integer 2 (as JSON Schema reads it)
        raw = int(raw)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19:
        value = int(raw)
    else:
        raise BadRequest(f"an item id is a positive integer, not {str(raw)[:60]!r}")
    if value <= 0 or value > MAX_ID:
        raise BadRequest("an item id is a positive integer")
    return value


def _int(name: str, raw: Any, low: int, high: int | None = None) -> int:
    if isinstance(raw, bool):
        raise BadRequest(f"{name} must be an integer")
    if isinstance(raw, str):
        text = raw
        if not re.fullmatch(r"-?[0-9]{1,19}", text):
            raise BadRequest(f"{name} must be an integer, not {raw[:40]!r}")
        raw = int(text)
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int):
        raise BadRequest(f"{name} must be an integer")
    high = MAX_ID if high is None else high
    if raw < low or raw > high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
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
    """true/false or 1/0, as JSON values or as strings (a query string's and a form's are strings)."""
    if isinstance(raw, bool):
        return raw
    if type(raw) is int and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.lower() in ("1", "true"):
        return True
    if isinstance(raw, str) and raw.lower() in ("0", "false"):
        return False
    raise BadRequest(f"{name} must be true or false")


def _string(name: str, raw: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(raw, str):
        raise BadRequest(f"{name} must be a string")
    if len(raw) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters")
    if "\x00" in raw:
        raise BadRequest(f"{name} must not contain NUL characters")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from JSON's \ud800: no database can store it
        raise BadRequest(f"{name} must be valid UTF-8 text (no lone surrogates)") from None
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
            piece = check(piece.strip())
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
        if value == "" and key in ("path_prefix", "path_glob"):
            continue
        if key in ("path_prefix", "path_glob"):
            values[key] = _string(key, value, MAX_PATH_CHARS)
        elif key in ("date_from", "date_to"):
            values[key] = _date(key, value)
        elif key == "date_field":
            values[key] = _string(key, value, 20)
        elif key in ("min_size", "max_size"):
            values[key] = _int(key, value, 0)
        elif key == "has_caption":
            values[key] = _bool(key, value)
        elif key == "tags":
            values[key] = tag_labels(value)
        elif key == "tag_set":
            values[key] = _label(key, value)
    return Filters(**values)


def _label(name: str, raw: Any) -> str:
    text = _string(name, raw, MAX_LABEL_CHARS)
    if not text:
        raise BadRequest(f"{name} must not be empty")
    return text


def tag_labels(raw: Any) -> list[str] | None:
    """The tags filter: a list of labels (or one label), each of 1 to MAX_LABEL_CHARS characters."""
    if not isinstance(raw, (list, str)):
        raise BadRequest("tags must be a list of strings (or one string)")
    values = raw if isinstance(raw, list) else [raw]
    if len(values) > MAX_FILTER_TAGS:
        raise BadRequest(f"tags holds at most {MAX_FILTER_TAGS} labels, not {len(values)}")
    return [_label(f"tags[{n}]", value) for n, value in enumerate(values)] or None


def _b64(name: str, raw: Any) -> bytes:
    if not isinstance(raw, str):
        raise BadRequest(f"{name} must be a base64 string")
    if raw.startswith("data:") and "," in raw:  # a data: URL from a browser
        raw = raw.split(",", 1)[1]
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name} is not valid base64") from None


def _vector(name: str, raw: Any) -> tuple[float, ...]:
    """A JSON list of numbers; how many the data dir's model needs is checked where the request meets the
    library (Library.search), since only the data dir knows."""
    if not isinstance(raw, list):
        raise BadRequest(f"{name} must be a list of numbers (a vector)")
    if not 1 <= len(raw) <= MAX_VECTOR_DIMS:
        raise BadRequest(f"{name} must have 1 to {MAX_VECTOR_DIMS} numbers, not {len(raw)}")
    wrong = next((n for n, v in enumerate(raw) if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if wrong is not None:
        raise BadRequest(f"{name}[{wrong}] must be a number")
    try:
        return vector_value(raw)
    except MMSearchError as exc:
        raise BadRequest(f"{name}: {exc}") from None


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
    weight = _number(f"{where}.weight", raw["weight"]) if "weight" in raw else 1.0
    value = raw["value"]
    if kind == "text":
        value = _string(f"{where}.value", value)
    elif kind == "item":
        value = item_id(value)
    elif kind == "vector":
        value = _vector(f"{where}.value", value)
    else:
        value = _b64(f"{where}.value", value)
    return QueryPart(kind, value, weight, _string(f"{where}.label", raw.get("label", ""), MAX_LABEL_CHARS))


def build(options: Mapping[str, Any], extra: Sequence[QueryPart] = (), allow_files: bool = False,
          limits: Limits = Limits(), k_default: int = 10, fields: Sequence[str] = OPTION_KEYS) -> SearchRequest:
    """One SearchRequest from the merged options of a JSON body, a form, a query string or CLI flags;
    ``extra`` parts come last: uploaded or named files the caller has read, the CLI's --like items."""
    unknown = set(options) - set(fields)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}")
    empty = sorted(key for key in set(options) - {"path_prefix", "path_glob"} if options[key] in ("", None))
    if empty:  # `k=` in a query string, an empty form field or a JSON null is no value: not the default either
        raise BadRequest(f"{empty[0]} is {'empty' if options[empty[0]] == '' else 'null'}: leave it out or give "
                         "it a value")
    parts: list[QueryPart] = []
    text = options.get("text", options.get("q"))
    if text is not None and text != "":
        text = _string("text", text)
        if len(text) > limits.max_chars:
            raise BadRequest(f"the query text is {len(text)} characters, at most {limits.max_chars} "
                             f"(setting query_max_chars)")
        parts += parse_query(text, allow_files=allow_files)
    if options.get("like") not in (None, ""):
        parts.append(QueryPart("item", item_id(options["like"])))
    raw_parts = options.get("parts")
    if raw_parts is not None:
        if not isinstance(raw_parts, list):
            raise BadRequest("parts must be a list")
        if len(raw_parts) > limits.max_parts:
            raise BadRequest(f"at most {limits.max_parts} query parts (setting query_max_parts)")
        parts += [json_part(n, p) for n, p in enumerate(raw_parts)]
    parts += list(extra)
    if not parts:
        raise BadRequest("nothing to search for: give text, like, parts or an image/audio file")
    weights = options.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(parts):
            raise BadRequest(f"weights must be a list of {len(parts)} numbers, one per query part")
        for n, (part, weight) in enumerate(zip(parts, weights)):
            weight = _number(f"weights[{n}]", weight)
            parts[n] = QueryPart(part.kind, part.value, weight, part.label, part.words)
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
        try:
            dedupe = _number("dedupe", dedupe)
        except BadRequest:
            raise BadRequest(f"dedupe takes 'hash' or a similarity threshold such as 0.95, not {str(dedupe)[:40]!r}"
                             ) from None
    request = SearchRequest(
        parts=parts,
        k=_int("k", options["k"], 1, MAX_K) if options.get("k") not in (None, "") else k_default,
        offset=_int("offset", options["offset"], 0, MAX_OFFSET) if options.get("offset") not in (None, "") else 0,
        filters=filters(raw_filters, mods),
        fusion=_string("fusion", options.get("fusion") or "early", 40),
        rrf_k=_int("rrf_k", options["rrf_k"], 1, MAX_RRF_K) if options.get("rrf_k") not in (None, "") else 60,
        explain=_bool("explain", options["explain"]) if options.get("explain") is not None else False,
        exclude_self=_bool("exclude_self", options["exclude_self"]) if options.get("exclude_self") is not None
        else False,
        dedupe=dedupe or None,
        index=_string("index", options["index"], 40) if options.get("index") else None,
        hybrid=_bool("hybrid", options["hybrid"]) if options.get("hybrid") is not None else False,
        alpha=_number("alpha", options["alpha"]) if options.get("alpha") is not None else 0.5,
    )
    limits.check(request)
    return request
