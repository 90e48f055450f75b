"""Flask app factory: the JSON API under /api and the search page at /.

One Library per app (``web.state.Shared``), shared by the request threads of the WSGI server. Every
error under /api is a JSON document ``{"error": {"code", "message"}}`` with a 4xx status (5xx only for
bugs), never an HTML page.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask, Request, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mmsearch.errors import LockedError, MMSearchError
from mmsearch.settings import Settings, load_settings

from .state import Shared

log = logging.getLogger(__name__)

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 411: "length_required", 413: "payload_too_large",
              414: "uri_too_long", 415: "unsupported_media_type", 416: "range_not_satisfiable",
              429: "too_many_requests", 431: "headers_too_large"}

# Every response: no MIME sniffing, no framing, no referrer. The page gets PAGE_CSP (no inline script or
# style: the template loads web/static only; blob: for picked files and recordings); /api/items/ID/media
# sets its own sandboxing policy; everything else may load nothing.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Cross-Origin-Resource-Policy": "same-origin"}
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "media-src 'self' blob:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'")
PAGE_PERMISSIONS = "microphone=(self), camera=(), geolocation=(), payment=(), usb=()"
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"


class TooManyFormFields(RequestEntityTooLarge):
    error_code = "too_many_form_fields"

    def __init__(self, limit: int):
        super().__init__(f"too many form fields: the limit is {limit} fields (setting max_form_fields)")


class _Request(Request):
    def _load_form_data(self) -> None:
        """Werkzeug refuses a multipart body of more than MAX_FORM_PARTS parts with the same 413 as a body
        over MAX_CONTENT_LENGTH or a field over MAX_FORM_MEMORY_SIZE; when neither can be the cause (the
        body is within both), say it is the field limit."""
        try:
            super()._load_form_data()
        except RequestEntityTooLarge:
            length = self.content_length
            if (self.mimetype.startswith("multipart/") and length is not None
                    and all(limit is None or length <= limit
                            for limit in (self.max_content_length, self.max_form_memory_size))):
                raise TooManyFormFields(self.max_form_parts) from None
            raise


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.request_class = _Request
    config = dict(test_config or {})
    chosen = config.pop("MMSEARCH", None)
    settings = chosen if isinstance(chosen, Settings) else load_settings(chosen or {})
    app.config["MMSEARCH"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_upload_bytes
    app.config["MAX_FORM_PARTS"] = settings.max_form_fields
    app.url_map.merge_slashes = False  # '/api/items/..%2F/media' is a 404, not a redirect to a new path
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config.update(config)
    app.extensions["mmsearch"] = Shared(settings, refresh_interval=float(app.config.get("REFRESH_INTERVAL", 0.0)))

    from . import api, pages, tags_api
    app.register_blueprint(api.bp)
    app.register_blueprint(tags_api.bp)
    app.register_blueprint(pages.bp)

    @app.before_request
    def request_limits():
        """The request target's length (waitress only bounds request line + headers together, and answers
        that itself) and the field count of a urlencoded form (Werkzeug counts multipart parts only)."""
        target = len(request.environ.get("REQUEST_URI") or request.full_path)
        if target > settings.max_request_line:
            abort(414, f"request target of {target} bytes is longer than {settings.max_request_line} bytes "
                       "(setting max_request_line)")
        if request.mimetype == "application/x-www-form-urlencoded":
            body = request.get_data(cache=True, parse_form_data=False)  # request.form then parses this copy
            if body.count(b"&") >= settings.max_form_fields:
                raise TooManyFormFields(settings.max_form_fields)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not request.path.startswith("/api"):
            return exc
        code = exc.code or 400
        response = jsonify(error={"code": getattr(exc, "error_code", None) or HTTP_CODES.get(code, "http_error"),
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
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
            response.headers.setdefault("Permissions-Policy", PAGE_PERMISSIONS)
        response.headers.setdefault("Content-Security-Policy", OTHER_CSP)
        if request.path.startswith("/api") and response.mimetype == "application/json":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def _message(exc: HTTPException) -> str:
    if exc.code == 413 and not isinstance(exc, TooManyFormFields):
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return f"request body too large: the limit is {limit} bytes (setting max_upload_bytes)"
    if exc.code == 404:
        return "no such resource"
    return (exc.description or exc.name or "bad request").split("\n")[0][:300]


def shared() -> Shared:
    return current_app.extensions["mmsearch"]


__all__ = ["HTTP_CODES", "OTHER_CSP", "SECURITY_HEADERS", "create_app", "shared"]
