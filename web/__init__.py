"""Flask app factory; the JSON API and search page grow here."""
from __future__ import annotations

from typing import Any, Mapping

from flask import Flask, current_app, g, jsonify

from mmsearch.settings import load_settings


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MMSEARCH"] = load_settings(dict(test_config or {}).pop("MMSEARCH", None) or {})
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "MMSEARCH"})

    from . import api
    app.register_blueprint(api.bp)
    return app


def get_library():
    """One Library per request context, opened on first use."""
    if "library" not in g:
        from mmsearch.library import Library
        g.library = Library(current_app.config["MMSEARCH"])
    return g.library


__all__ = ["create_app", "get_library", "jsonify"]
