"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json. Its limits come from the served
app's settings and the builder's constants (web/openapi_schemas.py), so the spec states what the server enforces."""
from __future__ import annotations

from typing import Any

from mmsearch import __version__
from mmsearch.modalities import MODALITIES
from mmsearch.search.request import MAX_ID, Limits
from mmsearch.settings import Settings, load_settings

from .openapi_schemas import RULES, filters, options, query_text, ref, schemas

JSON = "application/json"


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref("Error")}}}


def _ok(schema: str, description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def _query(name: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, **extra}


ID = {"name": "item_id", "in": "path", "required": True,
      "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "description": "1 to 2^63-1, digits only"}
MISSING = _error("No item with this id (or its file is gone)")


def _errors(settings: Settings, *statuses: int) -> dict[str, Any]:
    """The error responses every /api route can give, plus ``statuses``."""
    known = {
        400: "Bad input: malformed JSON, wrong types, out-of-range values, bad ids; the message names the field "
             "or the setting",
        401: "Missing or wrong admin bearer token",
        403: "Uploads and deletions are off (no admin_token configured)",
        404: "No item with this id (or its file is gone)",
        409: "Another process holds the write lock, or the item has no vector yet",
        413: f"Body larger than {settings.max_upload_bytes} bytes (setting max_upload_bytes), or a form with more "
             f"than {settings.max_form_fields} fields (setting max_form_fields)",
        414: f"Request target longer than {settings.max_request_line} bytes (setting max_request_line)",
        415: "Unsupported content type or file type",
        416: "Range not satisfiable",
        431: f"Request line and headers longer than {settings.max_header_bytes} bytes (setting max_header_bytes)",
    }
    return {str(code): _error(known[code]) for code in sorted({400, 405, 414, 431, *statuses} - {405})} | {
        "405": {**_error("Method not allowed"), "headers": {"Allow": {"schema": {"type": "string"}}}}}


def document(server: str = "", settings: Settings | None = None, vector_dims: int | None = None) -> dict[str, Any]:
    """The OpenAPI document; ``vector_dims``: the data dir's dimension, which a vector part must have."""
    settings = settings if settings is not None else load_settings({}, env={})
    limits = Limits.of(settings)
    opts, flat = options(limits), filters()
    search_params = [
        _query("q", query_text(limits), description="the query text (or give like)"),
        *(_query(name, schema) for name, schema in opts.items() if name != "modality"),
        _query("modality", opts["modality"], style="form", explode=True),
        *(_query(name, schema, **({"style": "form", "explode": True} if name == "tags" else {}))
          for name, schema in flat.items())]
    form = {"type": "object", "description": RULES, "properties": {
        "text": query_text(limits), **opts, **flat,
        "image": {"type": "string", "format": "binary", "description": "an image file (PNG, JPEG, ...)"},
        "audio": {"type": "string", "format": "binary", "description": "a sound file (WAV, FLAC, MP3, ...)"},
        "filters": {**ref("Filters"), "description": "a JSON object"}}}
    # no other fields: said with propertyNames, as additionalProperties false next to two binary fields makes
    # schemathesis 4 validate file objects it cannot (ValueError: Unsupported type: 'Binary')
    form["propertyNames"] = {"enum": list(form["properties"])}
    form_encoding = {"modality": {"style": "form", "explode": True}, "tags": {"style": "form", "explode": True},
                     "filters": {"contentType": JSON}}
    admin = [{"admin": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "mmsearch API", "version": __version__, "description":
                 "Multimodal search over indexed images, sounds and notes. Errors are {\"error\": {\"code\", "
                 "\"message\"}} with a 4xx status. A JSON body may nest at most "
                 f"{settings.json_max_depth} levels deep (setting json_max_depth)."},
        "servers": [{"url": server or "/"}],
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer",
                                          "description": "The admin_token setting."}},
            "schemas": schemas(limits, vector_dims)},
        "paths": {
            "/api/health": {"get": {"summary": "Liveness", "responses": {
                "200": {"description": "ok", "content": {JSON: {"schema": {
                    "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}}}},
                **_errors(settings)}}},
            "/api/stats": {"get": {"summary": "The same document as `manage.py stats --json`", "responses": {
                "200": _ok("Stats", "counts, model and index"), **_errors(settings)}}},
            "/api/search": {
                "get": {"summary": "Search from a query string (filters as flat parameters)",
                        "description": RULES, "parameters": search_params,
                        "responses": {"200": _ok("SearchResponse"), **_errors(settings, 404)}},
                "post": {"summary": "Multi-part search by words, an image, a sound and/or items",
                         "requestBody": {"required": True, "content": {
                             JSON: {"schema": ref("SearchRequest")},
                             "multipart/form-data": {"schema": form, "encoding": form_encoding}}},
                         "responses": {"200": _ok("SearchResponse"), **_errors(settings, 404, 413, 415)}}},
            "/api/items": {"post": {
                "summary": "Upload a file into the data dir's uploads folder and index it", "security": admin,
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"], "additionalProperties": False,
                    "properties": {"file": {"type": "string", "format": "binary", "description":
                                            "an image, sound or note; its name's extension says which"}}}}}},
                "responses": {"201": _ok("Item", "indexed"), **_errors(settings, 401, 403, 409, 413, 415)}}},
            "/api/items/{item_id}": {
                "get": {"summary": "One item's metadata (and full text for notes)", "parameters": [ID],
                        "responses": {"200": _ok("Item"), **_errors(settings, 404)}},
                "delete": {"summary": "Remove an item from the index (an uploaded file is deleted too)",
                           "parameters": [ID], "security": admin, "responses": {
                               "200": {"description": "deleted", "content": {JSON: {"schema": {
                                   "type": "object", "required": ["deleted"],
                                   "properties": {"deleted": ID["schema"]}}}}},
                               **_errors(settings, 401, 403, 404, 409)}}},
            "/api/items/{item_id}/similar": {"get": {
                "summary": "More like this item (the item itself and exact copies left out by default)",
                "parameters": [ID, _query("k", opts["k"]), _query("offset", opts["offset"]),
                               _query("modality", opts["modality"], style="form", explode=True),
                               _query("exclude_self", {"type": "boolean", "default": True}),
                               _query("explain", opts["explain"])],
                "responses": {"200": _ok("SearchResponse"), **_errors(settings, 404, 409)}}},
            "/api/items/{item_id}/media": {"get": {
                "summary": "The indexed file itself, with its content type; HTTP range requests supported",
                "parameters": [ID], "responses": {
                    "200": {"description": "the file", "content": {"*/*": {"schema": {"type": "string",
                                                                                       "format": "binary"}}},
                            "headers": {"Accept-Ranges": {"schema": {"const": "bytes"}}}},
                    "206": {"description": "a byte range", "headers": {"Content-Range": {"schema": {
                        "type": "string"}}}, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                    "304": {"description": "not modified (If-None-Match, If-Modified-Since)"},
                    **_errors(settings, 404, 416)}}},
            "/api/items/{item_id}/thumbnail": {"get": {
                "summary": "A cached JPEG thumbnail (images) or waveform PNG (sounds)", "parameters": [ID],
                "responses": {"200": {"description": "the picture", "content": {
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}}}},
                    "304": {"description": "not modified"}, **_errors(settings, 404)}}},
            "/api/tags": {"get": {"summary": "Every tag set: its kind, how many items it tags, its labels with "
                                             "their item counts (most common first)", "responses": {
                "200": _ok("TagSets"), **_errors(settings)}}},
            "/api/classify": {"post": {
                "summary": "Score one image, sound or text by the stored tag sets (their labels or trained "
                           "model), as each would tag it; nothing is indexed or stored",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "additionalProperties": False, "oneOf": [
                        {"required": [kind]} for kind in MODALITIES],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "a decodable image"},
                        "audio": {"type": "string", "format": "binary", "description": "a decodable sound"},
                        "text": {"type": "string", "pattern": "\\S", "maxLength": settings.query_max_chars},
                        "caption": {"type": "string", "pattern": "\\S", "maxLength": settings.query_max_chars,
                                    "description": "with an image or a sound: its caption, read as a sidecar's"},
                        "set": {"type": "array", "items": {"type": "string"},
                                "description": "only these tag sets (default: every one)"},
                        "top": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5}}},
                    "encoding": {"set": {"style": "form", "explode": True}}}}},
                "responses": {"200": _ok("Classification"), **_errors(settings, 404, 413, 415)}}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}},
                **_errors(settings)}}},
        },
    }
