"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json."""
from __future__ import annotations

from typing import Any

from mmsearch import __version__
from mmsearch.modalities import MODALITIES
from mmsearch.search.request import FUSIONS, INDEXES


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
BAD = _error("Bad input: malformed JSON, wrong types, out-of-range values, bad ids")
MISSING = _error("No item with this id (or its file is gone)")
ADMIN = {"401": _error("Missing or wrong admin bearer token"),
         "403": _error("Uploads and deletions are off (no admin_token configured)")}


def document(server: str = "") -> dict[str, Any]:
    search_options = {
        "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "offset": {"type": "integer", "minimum": 0, "default": 0},
        "modality": {"type": "array", "items": {"enum": list(MODALITIES)}},
        "fusion": {"enum": list(FUSIONS), "default": "early"},
        "rrf_k": {"type": "integer", "minimum": 1, "default": 60},
        "index": {"enum": list(INDEXES), "default": "modality",
                  "description": "Late fusion: rank each part within each modality's part of the index "
                                 "(modality), or over the whole index at once (fused). Early fusion: fused."},
        "explain": {"type": "boolean", "default": False},
        "exclude_self": {"type": "boolean", "default": False},
        "dedupe": {"oneOf": [{"const": "hash"}, {"type": "number", "exclusiveMinimum": 0, "maximum": 1}]},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mmsearch API", "version": __version__,
                 "description": "Multimodal search over indexed images, sounds and notes. Errors are "
                                "{\"error\": {\"code\", \"message\"}} with a 4xx status."},
        "servers": [{"url": server or "/"}],
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer",
                                          "description": "The admin_token setting."}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Part": {"type": "object", "required": ["kind", "value"], "properties": {
                    "kind": {"enum": ["text", "image", "audio", "item"]},
                    "value": {"description": "text; base64 file content for image/audio; an item id for item"},
                    "weight": {"type": "number", "not": {"const": 0}, "default": 1}}},
                "Filters": {"type": "object", "additionalProperties": False, "properties": {
                    "path_prefix": {"type": "string"}, "path_glob": {"type": "string"},
                    "date_from": {"type": "string", "format": "date-time"},
                    "date_to": {"type": "string", "format": "date-time"},
                    "date_field": {"enum": ["mtime", "taken_at"]},
                    "min_size": {"type": "integer", "minimum": 0}, "max_size": {"type": "integer", "minimum": 0},
                    "has_caption": {"type": "boolean"}}},
                "SearchRequest": {"type": "object", "additionalProperties": False, "properties": {
                    "text": {"type": "string", "description": "Query syntax: \"sunset\" + 0.5:beach - people, "
                                                              "2:cat, like:42. Paths are words here."},
                    "like": {"type": "integer", "minimum": 1},
                    "parts": {"type": "array", "items": {"$ref": "#/components/schemas/Part"}, "maxItems": 32},
                    "weights": {"type": "array", "items": {"type": "number"},
                                "description": "One weight per query part (text, like, parts, files in order)."},
                    "filters": {"$ref": "#/components/schemas/Filters"}, **search_options}},
                "Item": {"type": "object", "required": ["id", "path", "modality", "media_url", "metadata"],
                         "properties": {
                             "id": {"type": "integer"}, "path": {"type": "string"},
                             "modality": {"enum": list(MODALITIES)}, "score": {"type": "number"},
                             "media_url": {"type": "string"}, "thumbnail_url": {"type": ["string", "null"]},
                             "caption": {"type": "string"}, "snippet": {"type": "string"},
                             "text": {"type": "string"}, "metadata": {"type": "object"},
                             "parts": {"type": "array", "items": {"type": "object"}, "description":
                                       "explain: per query part its label, weight, score against the item, "
                                       "late fusion's best rank and, per modality index, score and rank"}}},
                "SearchResponse": {"type": "object", "required": ["results", "took_ms"], "properties": {
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                    "took_ms": {"type": "number"},
                    "fusion": {"enum": ["early", "rrf", "relative", "dbsf"]},
                    "index": {"enum": ["fused", "modality"], "description": "the index the results came from"},
                    "next": {"type": "integer", "description": "offset of the next page, when there is one"}}},
            },
        },
        "paths": {
            "/api/health": {"get": {"summary": "Liveness", "responses": {"200": {
                "description": "ok", "content": {"application/json": {"example": {"status": "ok"}}}}}}},
            "/api/stats": {"get": {"summary": "The same document as `manage.py stats --json`",
                                   "responses": {"200": {"description": "counts, model and index"}}}},
            "/api/search": {
                "get": {"summary": "Simple search from a query string",
                        "parameters": [
                            {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                            {"name": "k", "in": "query", "schema": search_options["k"]},
                            {"name": "offset", "in": "query", "schema": search_options["offset"]},
                            {"name": "modality", "in": "query", "schema": search_options["modality"],
                             "style": "form", "explode": True},
                            {"name": "fusion", "in": "query", "schema": search_options["fusion"]},
                            {"name": "index", "in": "query", "schema": search_options["index"]},
                            {"name": "like", "in": "query", "schema": {"type": "integer"}}],
                        "responses": {"200": _ok("SearchResponse"), "400": BAD, "404": MISSING}},
                "post": {"summary": "Multi-part search by words, an image, a sound and/or items",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
                             "multipart/form-data": {"schema": {"type": "object", "properties": {
                                 "text": {"type": "string"}, "image": {"type": "string", "format": "binary"},
                                 "audio": {"type": "string", "format": "binary"}, **search_options,
                                 "filters": {"type": "string", "description": "JSON object"}}}}}},
                         "responses": {"200": _ok("SearchResponse"), "400": BAD, "404": MISSING,
                                       "413": _error("Body larger than max_upload_bytes"),
                                       "415": _error("Neither JSON nor a form")}}},
            "/api/items": {"post": {
                "summary": "Upload a file into the data dir's uploads folder and index it",
                "security": [{"admin": []}],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}}}}}},
                "responses": {"201": _ok("Item"), "400": _error("The file cannot be indexed"), **ADMIN,
                              "409": _error("Another process is indexing"),
                              "413": _error("Body larger than max_upload_bytes"),
                              "415": _error("Unsupported file type")}}},
            "/api/items/{item_id}": {
                "get": {"summary": "One item's metadata (and full text for notes)", "parameters": [ID],
                        "responses": {"200": _ok("Item"), "400": BAD, "404": MISSING}},
                "delete": {"summary": "Remove an item from the index (an uploaded file is deleted too)",
                           "parameters": [ID], "security": [{"admin": []}],
                           "responses": {"200": {"description": "{\"deleted\": id}"}, "400": BAD,
                                         "404": MISSING, **ADMIN}}},
            "/api/items/{item_id}/similar": {"get": {
                "summary": "More like this item (the item itself and exact copies left out by default)",
                "parameters": [ID, {"name": "k", "in": "query", "schema": search_options["k"]},
                               {"name": "modality", "in": "query", "schema": search_options["modality"]},
                               {"name": "exclude_self", "in": "query", "schema": {"type": "boolean",
                                                                                 "default": True}}],
                "responses": {"200": _ok("SearchResponse"), "400": BAD, "404": MISSING}}},
            "/api/items/{item_id}/media": {"get": {
                "summary": "The indexed file itself, with its content type; HTTP range requests supported",
                "parameters": [ID], "responses": {"200": {"description": "the file"},
                                                  "206": {"description": "a byte range"}, "400": BAD,
                                                  "404": MISSING, "416": _error("Range not satisfiable")}}},
            "/api/items/{item_id}/thumbnail": {"get": {
                "summary": "A cached JPEG thumbnail (images) or waveform PNG (sounds)",
                "parameters": [ID], "responses": {"200": {"description": "image/jpeg or image/png"},
                                                  "400": BAD, "404": MISSING}}},
            "/api/openapi.json": {"get": {"summary": "This document",
                                          "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
    }


def _ok(schema: str) -> dict[str, Any]:
    return {"description": "ok", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}
