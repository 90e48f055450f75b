"""JSON API blueprint: health, stats, search, items (metadata, similar, media, thumbnail), uploads.

Files are only ever served by item id, from the path stored in SQL when the file was indexed; no
URL segment, field or query text reaches the file system.
"""
from __future__ import annotations

import hmac
import mimetypes
import os
import re
import uuid
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, request, send_file, url_for
from werkzeug.utils import secure_filename

from mmsearch.modalities import MEDIA, modality_of
from mmsearch.errors import MMSearchError
from mmsearch.search import parse
from mmsearch.search.request import Limits, QueryPart, SearchRequest
from mmsearch.search.results import item_document, response_document

from . import media, shared

bp = Blueprint("api", __name__, url_prefix="/api")

UPLOAD_DIR = "uploads"
MAX_NAME = 100  # characters of an uploaded file's own name kept in the stored one


class ApiError(MMSearchError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


# --- shapes ---------------------------------------------------------------------------------------
def _links(item) -> dict[str, Any]:
    """The URLs a result or an item document carries in the web API (search.results makes the rest).
    Item metadata (sizes, durations, timestamps with their time zone) is search.results.metadata."""
    return {"media_url": url_for("api.item_media", item_id=item.id),
            "thumbnail_url": (url_for("api.item_thumbnail", item_id=item.id) if item.modality in MEDIA else None)}


def item_json(item, full: bool = False) -> dict[str, Any]:
    tags = shared().library().store.tags.of([item.id]).get(item.id)
    return item_document(item, full=full, links=_links, tags=tags)


# --- helpers --------------------------------------------------------------------------------------
def _item(raw_id: str):
    item_id = parse.item_id(raw_id)
    item = shared().library().store.get_item(item_id)
    if item is None:
        raise not_found(f"no item with id {item_id}")
    return item


def _run(search_request: SearchRequest) -> dict[str, Any]:
    state = shared()
    with state.reading() as library:
        items = [p.value for p in search_request.parts if p.kind == "item"]
        if items:
            found = library.store.items_by_id(items)
            missing = [i for i in items if i not in found]
            if missing:
                raise not_found(f"no item with id {missing[0]}")
        response = library.search(search_request, state.embed)
        tags = library.store.tags.of([hit.id for hit in response.results])
    return response_document(response, search_request, _links, tags)


def _build(options: dict[str, Any], files: list[QueryPart] | tuple = (), source: str = "") -> SearchRequest:
    return parse.build(options, files, limits=Limits.of(current_app.config["MMSEARCH"]),
                       fields=parse.FIELDS.get(source, parse.OPTION_KEYS))


def _json_body() -> Any:
    """The request's JSON, its nesting checked before it is parsed (json's parser recurses: a body of
    100,000 '[' would end in a RecursionError, a 500)."""
    data = request.get_data(cache=True)
    limit = current_app.config["MMSEARCH"].json_max_depth
    if _depth(data) > limit:
        raise parse.BadRequest(f"the JSON body is nested deeper than {limit} levels (setting json_max_depth)")
    body = request.get_json(silent=True)
    if body is None:
        raise parse.BadRequest("the body is not valid JSON")
    return body


def _depth(data: bytes) -> int:
    """How deep arrays and objects nest in a JSON text, brackets inside strings not counted."""
    deepest = depth = 0
    for token in _JSON_TOKENS.finditer(data):
        if token.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token.group() in (b"]", b"}"):
            depth -= 1
    return deepest


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _form_options() -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in request.form:
        values = request.form.getlist(key)
        options[key] = values if key in parse.LISTS else values[-1]
    for key in ("filters", "parts", "weights"):
        if key in options:
            import json
            try:
                options[key] = json.loads(options[key])
            except ValueError:
                raise parse.BadRequest(f"{key} must be JSON in a form field") from None
    return options


def _query_files() -> list[QueryPart]:
    unknown = set(request.files) - {"image", "audio"}
    if unknown:
        raise parse.BadRequest(f"unknown file field(s): {', '.join(sorted(unknown))[:200]}; use image or audio")
    out: list[QueryPart] = []
    for kind in ("image", "audio"):
        upload = request.files.get(kind)
        if upload is None:
            continue
        data = upload.read()
        if not data:
            raise parse.BadRequest(f"the {kind} file is empty")
        out.append(QueryPart(kind, data, 1.0, kind))
    return out


def _args() -> dict[str, Any]:
    """A query string as builder options: the last value of each key, every value of modality and tags."""
    return {key: request.args.getlist(key) if key in parse.LISTS else request.args.getlist(key)[-1]
            for key in request.args}


def _admin() -> None:
    token = current_app.config["MMSEARCH"].admin_token
    if not token:
        raise ApiError(403, "disabled", "uploads and deletions are off: set the admin_token setting to enable them")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "an admin bearer token is required (Authorization: Bearer TOKEN)")


# --- endpoints ------------------------------------------------------------------------------------
@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/stats")
def stats():
    with shared().reading() as library:
        return jsonify(library.stats())


@bp.get("/search")
def search_get():
    return jsonify(_run(_build(_args(), source="query")))


@bp.post("/search")
def search_post():
    if request.is_json:
        body = _json_body()
        if not isinstance(body, dict):
            raise parse.BadRequest("the body must be a JSON object")
        return jsonify(_run(_build(body, source="json")))
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        files = _query_files()
        return jsonify(_run(_build(_form_options(), files, source="form")))
    raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")


@bp.get("/items/<item_id>")
def item_detail(item_id: str):
    return jsonify(item_json(_item(item_id), full=True))


@bp.get("/items/<item_id>/similar")
def item_similar(item_id: str):
    item = _item(item_id)
    unknown = set(request.args) - {"k", "modality", "offset", "exclude_self", "explain"}
    if unknown:
        raise parse.BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))[:200]}")
    if item.status != "ok":
        raise ApiError(409, "no_vector", f"item {item.id} has no vector yet (status {item.status})")
    return jsonify(_run(_build({"exclude_self": True, **_args(), "like": item.id})))


def _servable(item) -> str:
    if item.status == "failed":
        raise not_found(f"item {item.id} failed to index; its file is not served")
    if not os.path.isfile(item.path):
        raise ApiError(404, "file_missing", f"item {item.id}'s file is no longer on disk")
    return item.path


@bp.get("/items/<item_id>/media")
def item_media(item_id: str):
    item = _item(item_id)
    path = _servable(item)
    mime = item.mime or mimetypes.guess_type(path)[0] or "application/octet-stream"
    if item.modality == "text":
        mime = "text/plain"  # never let a note be rendered as HTML
    # the file's own name, made a valid header: control characters (a newline) become "_", bytes that are
    # not UTF-8 become U+FFFD; Werkzeug then sends non-ASCII names as RFC 5987 filename*=UTF-8''...
    name = os.fsencode(os.path.basename(path)).decode("utf-8", "replace")
    name = re.sub(r"[\x00-\x1f\x7f-\x9f]", "_", name)
    response = send_file(path, mimetype=mime, conditional=True, etag=True, max_age=300, download_name=name)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Security-Policy"] = ("default-src 'none'; img-src 'self'; media-src 'self'; sandbox; "
                                                   "frame-ancestors 'none'")
    return response


@bp.get("/items/<item_id>/thumbnail")
def item_thumbnail(item_id: str):
    item = _item(item_id)
    _servable(item)
    settings = current_app.config["MMSEARCH"]
    try:
        path, mime = media.picture(item, settings)
    except media.NoPicture as exc:
        raise not_found(str(exc)) from None
    return send_file(path, mimetype=mime, conditional=True, max_age=86400)


@bp.post("/items")
def item_upload():
    _admin()
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "upload a file as multipart/form-data field 'file'")
    unknown = set(request.files) - {"file"}
    upload = request.files.get("file")
    if unknown or upload is None:
        raise parse.BadRequest("upload one file in the multipart field 'file'")
    name = re.sub(r"\.{2,}", ".", secure_filename(upload.filename or "")).lstrip(".")
    stem, ext = os.path.splitext(name)
    name = stem[:MAX_NAME] + ext[:16]  # file systems stop at 255 bytes; secure_filename leaves ASCII only
    modality = modality_of(name) if name else None
    if modality is None:
        raise ApiError(415, "unsupported_media_type",
                       "the file name must end in a supported image, sound or text extension")
    data = upload.read()
    if not data:
        raise parse.BadRequest("the uploaded file is empty")
    settings = current_app.config["MMSEARCH"]
    folder = settings.data_path / UPLOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex[:12]}-{name}"
    target.write_bytes(data)
    state = shared()
    try:
        with state.writing() as library:
            state.load_models(audio=modality == "audio")
            library.run_index([str(target)])
            ids = library.store.ids_under(str(target))
            item = library.store.get_item(ids[0]) if ids else None
            if item is None or item.status == "failed":
                reason = item.error if item is not None else "not indexed"
                library.remove([str(target)])
                raise ApiError(400, "bad_upload", f"cannot index the uploaded {modality}: {reason}")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return jsonify(item_json(item, full=True)), 201


@bp.delete("/items/<item_id>")
def item_delete(item_id: str):
    _admin()
    item = _item(item_id)
    state = shared()
    with state.writing() as library:
        library.remove([item.path])
    uploads = (current_app.config["MMSEARCH"].data_path / UPLOAD_DIR).resolve()
    path = Path(item.path)
    if path.parent.resolve() == uploads:  # files that came in through the API go with their item
        path.unlink(missing_ok=True)
    return jsonify(deleted=item.id)


@bp.get("/openapi.json")
def openapi():
    from .openapi import document
    return jsonify(document(request.host_url.rstrip("/"), current_app.config["MMSEARCH"],
                            shared().library().vector_dims()[0]))
