"""JSON API blueprint: health, stats, search, items (metadata, similar, media, thumbnail), uploads.

Files are only ever served by item id, from the path stored in SQL when the file was indexed; no
URL segment, field or query text reaches the file system.
"""
from __future__ import annotations

import datetime as dt
import hmac
import mimetypes
import os
import re
import uuid
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, request, send_file, url_for
from werkzeug.utils import secure_filename

from indexer.scan import modality_of
from mmsearch.errors import MMSearchError
from search.request import MAX_K, Filters, QueryPart, SearchRequest

from . import media, parse, shared

bp = Blueprint("api", __name__, url_prefix="/api")

SNIPPET_CHARS = 240
UPLOAD_DIR = "uploads"


class ApiError(MMSearchError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


# --- shapes ---------------------------------------------------------------------------------------
def _metadata(item) -> dict[str, Any]:
    out = {key: getattr(item, key) for key in ("mime", "size", "width", "height", "duration", "sample_rate",
                                               "channels", "status")}
    out["modified"] = dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.timezone.utc).isoformat()
    out["taken_at"] = item.taken_at.isoformat() if item.taken_at else None
    out["indexed_at"] = item.indexed_at.isoformat() if item.indexed_at else None
    if item.error:
        out["error"] = item.error
    return {k: v for k, v in out.items() if v is not None}


def item_json(item, score: float | None = None, parts: list | None = None, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item.id, "path": item.path, "modality": item.modality}
    if score is not None:
        out["score"] = score
    out["media_url"] = url_for("api.item_media", item_id=item.id)
    out["thumbnail_url"] = (url_for("api.item_thumbnail", item_id=item.id)
                            if item.modality in ("image", "audio") else None)
    out["name"] = os.path.basename(item.path)
    if item.caption:
        out["caption"] = item.caption
    if item.text:
        out["snippet"] = item.text[:SNIPPET_CHARS] + ("…" if len(item.text) > SNIPPET_CHARS else "")
        if full:
            out["text"] = item.text
    out["metadata"] = _metadata(item)
    if parts is not None:
        out["parts"] = parts
    return out


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
        response = library.searcher().search(search_request, lambda part: state.embed(part.kind, part.value))
    document: dict[str, Any] = {
        "results": [item_json(hit.item, hit.score, hit.parts) for hit in response.results],
        "took_ms": round(response.took_ms, 3),
        "fusion": search_request.fusion,
        "index": response.index,
    }
    if response.next_offset is not None:
        document["next"] = response.next_offset
    if search_request.explain:
        document["parts"] = response.parts
    return document


def _form_options() -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in request.form:
        values = request.form.getlist(key)
        options[key] = values if key == "modality" else values[-1]
    for key in ("filters", "parts", "weights"):
        if key in options:
            import json
            try:
                options[key] = json.loads(options[key])
            except ValueError:
                raise parse.BadRequest(f"{key} must be JSON in a form field") from None
    return options


def _query_files() -> dict[str, bytes]:
    unknown = set(request.files) - {"image", "audio"}
    if unknown:
        raise parse.BadRequest(f"unknown file field(s): {', '.join(sorted(unknown))[:200]}; use image or audio")
    out: dict[str, bytes] = {}
    for kind in ("image", "audio"):
        upload = request.files.get(kind)
        if upload is None:
            continue
        data = upload.read()
        if not data:
            raise parse.BadRequest(f"the {kind} file is empty")
        out[kind] = data
    return out


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
    options: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        options[key] = values if key == "modality" else values[-1]
    if "filters" in options:
        raise parse.BadRequest("filters are flat query parameters in GET /api/search (path_prefix=...)")
    return jsonify(_run(parse.build(options)))


@bp.post("/search")
def search_post():
    if request.is_json:
        body = request.get_json(silent=True)
        if body is None:
            raise parse.BadRequest("the body is not valid JSON")
        if not isinstance(body, dict):
            raise parse.BadRequest("the body must be a JSON object")
        return jsonify(_run(parse.build(body)))
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        files = _query_files()
        return jsonify(_run(parse.build(_form_options(), files)))
    raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")


@bp.get("/items/<item_id>")
def item_detail(item_id: str):
    return jsonify(item_json(_item(item_id), full=True))


@bp.get("/items/<item_id>/similar")
def item_similar(item_id: str):
    item = _item(item_id)
    args = request.args
    unknown = set(args) - {"k", "modality", "offset", "exclude_self", "explain"}
    if unknown:
        raise parse.BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))[:200]}")
    k = parse._int("k", args["k"], 1, MAX_K) if args.get("k") else 10
    offset = parse._int("offset", args["offset"], 0, 1_000_000) if args.get("offset") else 0
    exclude = parse._bool("exclude_self", args["exclude_self"]) if "exclude_self" in args else True
    explain = parse._bool("explain", args["explain"]) if "explain" in args else False
    modalities = parse.modalities(args.getlist("modality") or None)
    if item.status != "ok":
        raise ApiError(409, "no_vector", f"item {item.id} has no vector yet (status {item.status})")
    return jsonify(_run(SearchRequest([QueryPart("item", item.id)], k=k, offset=offset,
                                      filters=Filters(modalities=modalities), exclude_self=exclude,
                                      explain=explain)))


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
    response = send_file(path, mimetype=mime, conditional=True, etag=True, max_age=300,
                         download_name=os.path.basename(path))
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"
    return response


@bp.get("/items/<item_id>/thumbnail")
def item_thumbnail(item_id: str):
    item = _item(item_id)
    _servable(item)
    settings = current_app.config["MMSEARCH"]
    try:
        path, mime = media.picture(item, settings.data_path, settings.thumbnail_size, settings.max_image_pixels)
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
    return jsonify(document(request.host_url.rstrip("/")))
