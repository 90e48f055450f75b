"""Flask app factory: the JSON API under /api and the search page at /.

One Library per app (``web.state.Shared``), shared by the request threads of the WSGI server. Every
error under /api is a JSON document ``{"error": {"code", "message"}}`` with a 4xx status (5xx only for
bugs), never an HTML page.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from mmsearch.errors import LockedError, MMSearchError
from mmsearch.settings import Settings, load_settings

from .state import Shared

log = logging.getLogger(__name__)

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 411: "length_required", 413: "payload_too_large",
              414: "uri_too_long", 415: "unsupported_media_type", 416: "range_not_satisfiable",
              429: "too_many_requests", 431: "headers_too_large"}


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    config = dict(test_config or {})
    chosen = config.pop("MMSEARCH", None)
    settings = chosen if isinstance(chosen, Settings) else load_settings(chosen or {})
    app.config["MMSEARCH"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_upload_bytes
    app.url_map.merge_slashes = False  # '/api/items/..%2F/media' is a 404, not a redirect to a new path
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config.update(config)
    app.extensions["mmsearch"] = Shared(settings, refresh_interval=float(app.config.get("REFRESH_INTERVAL", 0.0)))

    from . import api, pages
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not request.path.startswith("/api"):
            return exc
        code = exc.code or 400
        response = jsonify(error={"code": HTTP_CODES.get(code, "http_error"),
                                  "message": _message(exc)})
        response.status_code = code
        if code == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(LockedError)
    def locked(exc: LockedError):
        return jsonify(error={"code": "locked", "message": str(exc)}), 409

    @app.errorhandler(MMSearchError)
    def user_error(exc: MMSearchError):
        status = getattr(exc, "status", 400)
        return jsonify(error={"code": getattr(exc, "code", "bad_request"), "message": str(exc)}), status

    @app.errorhandler(Exception)
    def bug(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not request.path.startswith("/api"):
            return "internal error", 500
        return jsonify(error={"code": "internal", "message": f"internal error: {type(exc).__name__}"}), 500

    @app.after_request
    def headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith("/api") and response.mimetype == "application/json":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def _message(exc: HTTPException) -> str:
    if exc.code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return f"request body too large: the limit is {limit} bytes (setting max_upload_bytes)"
    if exc.code == 404:
        return "no such resource"
    return (exc.description or exc.name or "bad request").split("\n")[0][:300]


def shared() -> Shared:
    return current_app.extensions["mmsearch"]


def get_library():
    """The app's one Library (opened on first use)."""
    return shared().library()


__all__ = ["create_app", "get_library", "shared", "jsonify"]
