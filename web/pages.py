"""The search page: one server template plus plain JS/CSS from web/static (no build step, no CDN)."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

from mmsearch.search.request import MAX_K

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    settings = current_app.config["MMSEARCH"]
    return render_template("index.html", max_k=MAX_K, max_upload=settings.max_upload_bytes)
