"""The component schemas of the OpenAPI document (web/openapi.py), every bound taken from the constants and
settings the request builder (search/parse.py) enforces, so the spec and the server cannot drift."""
from __future__ import annotations

from typing import Any

from mmsearch.modalities import MODALITIES
from mmsearch.search.parse import FILTER_KEYS
from mmsearch.search.request import (FUSIONS, INDEXES, KINDS, MAX_FILTER_TAGS, MAX_ID, MAX_K, MAX_LABEL_CHARS,
                                     MAX_OFFSET, MAX_PATH_CHARS, MAX_RRF_K, MAX_TEXT_CHARS, MAX_VECTOR_DIMS, Limits)

NO_NUL = "^[^\\x00]*$"  # the builder refuses NUL characters in every string
QUERY_FORMAT = "mmsearch-query"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def query_text(limits: Limits) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limits.max_chars, "pattern": NO_NUL,
            "format": QUERY_FORMAT, "description":
            f"Query syntax, at most {limits.max_chars} characters (setting query_max_chars): terms joined by + or "
            "- (a leading - negates the next term), `N:` before a term multiplies its weight (N nonzero, at most "
            f"{limits.max_weight:g} in size, setting query_max_weight), a term is a \"quoted phrase\" (quotes "
            "closed), like:ID (ID 1 to 2^63-1), vector:[x, y, ...] (as a vector part) or bare words, which run "
            "together into one text part. Paths are "
            f"words here. At most {limits.max_parts} parts in all (setting query_max_parts)."}


def weight(limits: Limits) -> dict[str, Any]:
    return {"type": "number", "minimum": -limits.max_weight, "maximum": limits.max_weight, "not": {"const": 0},
            "description": f"nonzero, at most {limits.max_weight:g} in size (setting query_max_weight)"}


def options(limits: Limits) -> dict[str, dict[str, Any]]:
    """The search options every form of search request takes: query string, JSON body, multipart form."""
    return {
        "like": {"type": "integer", "minimum": 1, "maximum": MAX_ID,
                 "description": "an indexed item's id: search for items like it (unknown: 404)"},
        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
        "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        "modality": {"type": "array", "items": {"enum": list(MODALITIES)}},
        "fusion": {"enum": list(FUSIONS), "default": "early"},
        "rrf_k": {"type": "integer", "minimum": 1, "maximum": MAX_RRF_K, "default": 60},
        "index": {"enum": list(INDEXES), "description":
                  "Late fusion: rank each part within each modality's part of the index (modality, the default), "
                  "or over the whole index at once (fused). Early fusion: fused only."},
        "explain": {"type": "boolean", "default": False, "description":
                    f"per result, each part's score; k × parts at most {limits.explain_rows} "
                    "(setting explain_max_rows)"},
        "exclude_self": {"type": "boolean", "default": False},
        "hybrid": {"type": "boolean", "default": False, "description":
                   "also rank the text parts by full-text search (file names, paths, captions, note text; BM25) "
                   "and fuse that list with the vector ranking by RRF; needs a text part"},
        "alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5, "description":
                  "hybrid: the vector ranking's weight in the fusion, 1 − alpha the lexical ranking's"},
        # "hash", or a similarity threshold in (0, 1]; type-specific keywords rather than oneOf, which
        # schemathesis cannot combine with the multipart form's binary fields
        "dedupe": {"type": ["string", "number"], "pattern": "^hash$", "exclusiveMinimum": 0, "maximum": 1},
    }


LABEL = {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS, "pattern": NO_NUL}


def filters(json_body: bool = False) -> dict[str, dict[str, Any]]:
    """The filters; a query string or a form repeats tags (an array), a JSON body may also give one string."""
    path = {"type": "string", "maxLength": MAX_PATH_CHARS, "pattern": NO_NUL}
    date = {"type": "string", "format": "date-time", "maxLength": 64, "description":
            "ISO 8601, any year 1 to 9999: 2024-05-01T12:00:00Z; also a date alone (2024-05-01) or a time without "
            "offset (UTC)"}
    size = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
    # a JSON body's tags may be one label: type-specific keywords for both, as dedupe's (no oneOf)
    one = {k: v for k, v in LABEL.items() if k != "type"} if json_body else {}
    out = {"path_prefix": path, "path_glob": path, "date_from": date, "date_to": date,
           "date_field": {"enum": ["mtime", "taken_at"]}, "min_size": size, "max_size": size,
           "has_caption": {"type": "boolean"},
           "tags": {"type": ["array", "string"] if json_body else "array", "items": LABEL,
                    "maxItems": MAX_FILTER_TAGS, **one,
                    "description": "only items that carry every one of these tag labels (exact, any tag set or "
                                   "tag_set's; GET /api/tags lists them)"},
           "tag_set": {**LABEL, "description": "only this tag set's tags count; without tags: items with any tag "
                                               "of the set"}}
    assert tuple(out) == FILTER_KEYS
    return out


RULES = ("Rules across fields (refused with a 400): a search needs something to search for (text, like, parts "
         "or a file); early fusion takes no index 'modality'; late fusion needs a part with a positive weight; "
         "hybrid needs a text part with a positive weight (a vector part is no text); "
         "weights has one number per query part; a vector part has as many numbers as the data dir's vectors "
         "have dimensions (GET /api/stats: index.dim).")


def vector(dims: int | None = None) -> dict[str, Any]:
    """A vector part's value; ``dims``, the served data dir's dimension when known, fixes its length."""
    low, high = (dims, dims) if dims else (1, MAX_VECTOR_DIMS)
    return {"type": "array", "minItems": low, "maxItems": high, "items": {"type": "number"},
            "contains": {"not": {"const": 0}}, "description":
            f"{'exactly ' + str(dims) if dims else 'up to ' + str(MAX_VECTOR_DIMS)} finite numbers, not all 0 "
            "(normalised by the server); as many as the data dir's vectors have dimensions (GET /api/stats: "
            "index.dim)"}


def schemas(limits: Limits, vector_dims: int | None = None) -> dict[str, Any]:
    opts = options(limits)
    error = {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": {
        "type": "object", "required": ["code", "message"], "additionalProperties": False,
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
    part = {"type": "object", "required": ["kind", "value"], "additionalProperties": False, "properties": {
        "kind": {"enum": list(KINDS)},
        "value": {"description": "text; base64 file content for image/audio; an item id for item; numbers for "
                  "vector"},
        "weight": {**weight(limits), "default": 1},
        "label": {"type": "string", "maxLength": MAX_LABEL_CHARS, "pattern": NO_NUL}},
        "oneOf": [
            {"properties": {"kind": {"const": "text"}, "value": {
                "type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS, "pattern": "^[^\\x00]*\\S[^\\x00]*$"}}},
            {"properties": {"kind": {"enum": ["image", "audio"]}, "value": {
                "type": "string", "contentEncoding": "base64", "description": "the file's bytes in base64"}}},
            {"properties": {"kind": {"const": "item"}, "value": {"type": "integer", "minimum": 1,
                                                                 "maximum": MAX_ID}}},
            {"properties": {"kind": {"const": "vector"}, "value": vector(vector_dims)}}]}
    request = {"type": "object", "additionalProperties": False, "description": RULES, "properties": {
        "text": query_text(limits), **opts,
        "parts": {"type": "array", "items": ref("Part"), "maxItems": limits.max_parts},
        "weights": {"type": "array", "items": weight(limits), "maxItems": limits.max_parts,
                    "description": "One weight per query part (text, like, parts, files in order)."},
        "filters": ref("Filters")}}
    metadata = {"type": "object", "properties": {
        "mime": {"type": "string"}, "size": {"type": "integer", "minimum": 0},
        "width": {"type": "integer"}, "height": {"type": "integer"}, "duration": {"type": "number"},
        "sample_rate": {"type": "integer"}, "channels": {"type": "integer"}, "status": {"type": "string"},
        "modified": {"type": "string", "format": "date-time"},
        "taken_at": {"type": "string", "description": "camera time, no zone known"},
        "indexed_at": {"type": "string", "format": "date-time"}, "error": {"type": "string"}}}
    tag = {"type": "object", "required": ["set", "label", "score"], "additionalProperties": False, "properties": {
        "set": {"type": "string"}, "label": {"type": "string"}, "score": {"type": "number"}}}
    item = {"type": "object", "required": ["id", "path", "modality", "media_url", "name", "metadata"],
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "path": {"type": "string"},
                "modality": {"enum": list(MODALITIES)}, "score": {"type": "number"},
                "media_url": {"type": "string"}, "thumbnail_url": {"type": ["string", "null"]},
                "name": {"type": "string"}, "caption": {"type": "string"}, "snippet": {"type": "string"},
                "text": {"type": "string"}, "metadata": metadata,
                "tags": {"type": "array", "items": tag, "description":
                         "the item's tags, best score first (left out when it has none)"},
                "match": {"type": "object", "required": ["kind", "score"], "properties": {
                    "kind": {"enum": ["content", "caption", "passage", "segment", "lexical"]},
                    "score": {"type": "number"}, "text": {"type": "string"},
                    "chars": {"type": "array", "items": {"type": "integer"}},
                    "start": {"type": "number"}, "end": {"type": "number"}}, "description":
                    "the item's vector that matched best: its kind and score, a caption's or passage's text "
                    "(a passage's character range), a segment's start and end in seconds"},
                "parts": {"type": "array", "items": {"type": "object"}, "description":
                          "explain: per query part its label, weight, score against the item, "
                          "late fusion's best rank and, per modality index, score and rank"}}}
    response = {"type": "object", "required": ["results", "took_ms", "fusion", "index"], "properties": {
        "results": {"type": "array", "items": ref("Item"), "maxItems": MAX_K},
        "took_ms": {"type": "number", "minimum": 0},
        "fusion": {"enum": list(FUSIONS)},
        "index": {"enum": list(INDEXES), "description": "the index the results came from"},
        "next": {"type": "integer", "description": "offset of the next page, when there is one"},
        "parts": {"type": "array", "items": {"type": "object"}, "description": "explain: the query's parts"}}}
    count = {"type": "integer", "minimum": 0}
    stats = {"type": "object", "required": ["items", "by_modality", "pending", "failed"], "properties": {
        "items": count, "pending": count, "failed": count,
        "by_modality": {"type": "object", "required": list(MODALITIES),
                        "properties": {m: count for m in MODALITIES}},
        "model": {"type": ["object", "null"]}, "index": {"type": ["object", "null"]}}}
    tag_sets = {"type": "object", "required": ["sets"], "additionalProperties": False, "properties": {"sets": {
        "type": "array", "items": {"type": "object", "required": ["name", "kind", "items", "updated_at", "labels"],
                                   "additionalProperties": False, "properties": {
            "name": {"type": "string"}, "kind": {"enum": ["zero-shot", "trained"]}, "items": count,
            "updated_at": {"type": "string", "format": "date-time"},
            "labels": {"type": "array", "description": "most common first", "items": {
                "type": "object", "required": ["label", "count"], "additionalProperties": False,
                "properties": {"label": {"type": "string"}, "count": count}}}}}}}}
    scored = {"type": "object", "required": ["label", "score"], "additionalProperties": False,
              "properties": {"label": {"type": "string"}, "score": {"type": "number"}}}
    classified = {"type": "object", "required": ["modality", "sets"], "additionalProperties": False, "properties": {
        "modality": {"enum": list(MODALITIES)}, "sets": {"type": "array", "items": {
            "type": "object", "required": ["set", "kind", "labels"], "additionalProperties": False,
            "properties": {"set": {"type": "string"}, "kind": {"enum": ["zero-shot", "trained"]},
                           "labels": {"type": "array", "description": "best first", "items": scored}}}}}}
    return {"Error": error, "Part": part, "Classification": classified, "Filters": {"type": "object", "additionalProperties": False,
                                                      "properties": filters(json_body=True)},
            "SearchRequest": request, "Item": item, "SearchResponse": response, "Stats": stats, "TagSets": tag_sets}
