"""JSON API blueprint. Health and stats now; search endpoints arrive with the web issue."""
from __future__ import annotations

from flask import Blueprint, jsonify

from mmsearch.errors import MMSearchError

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/stats")
def stats():
    from . import get_library
    return jsonify(get_library().stats())


@bp.errorhandler(MMSearchError)
def user_error(exc: MMSearchError):
    return jsonify(error={"code": "bad_request", "message": str(exc)}), 400
