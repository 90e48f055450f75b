"""The tags of the JSON API: GET /api/tags, every tag set with its labels and how many items carry each (the
tags themselves come with results and items, search.results; filters.tags filters a search by them), and
POST /api/classify, a file scored by the tag sets without being indexed."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from mmsearch.search.results import tag_sets_document

from . import shared

bp = Blueprint("tags", __name__, url_prefix="/api")


@bp.get("/tags")
def tag_sets():
    return jsonify(tag_sets_document(shared().library().store.tags.sets()))


MAX_TOP = 100


@bp.post("/classify")
def classify():
    """One uploaded image or sound, or a text, scored by the stored tag sets (all, or the ``set`` fields) as
    each would tag it; nothing is indexed or stored."""
    from mmsearch.classify_file import classify_one
    from mmsearch.search import parse
    from .api import ApiError
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data: a field image, audio or text")
    unknown = (set(request.files) - {"image", "audio"}) | (set(request.form) - {"text", "caption", "set", "top"})
    if unknown:
        raise parse.BadRequest(f"unknown field(s): {', '.join(sorted(unknown))[:200]}; use image, audio or text, "
                               "and caption, set, top")
    given = [kind for kind in ("image", "audio") if kind in request.files] + (["text"] if "text" in request.form else [])
    if len(given) != 1:
        raise parse.BadRequest("send exactly one of image, audio or text")
    kind = given[0]
    value = request.files[kind].read() if kind != "text" else request.form["text"]
    if not value or (kind == "text" and not value.strip()):
        raise parse.BadRequest(f"the {kind} is empty")
    top = request.form.get("top", "5")
    if not (top.isascii() and top.isdigit()) or not 1 <= int(top) <= MAX_TOP:
        raise parse.BadRequest(f"top must be a whole number from 1 to {MAX_TOP}")
    caption = request.form.get("caption")
    if caption is not None and not caption.strip():
        raise parse.BadRequest("the caption is empty")
    limit = shared().library().settings.query_max_chars
    for name, text in (("text", value if kind == "text" else None), ("caption", caption)):
        if text is not None and len(text) > limit:
            raise parse.BadRequest(f"the {name} is longer than {limit} characters (setting query_max_chars)")
    names = request.form.getlist("set") or None
    library = shared().library()
    vector = library.embed_query(kind, value)
    caption_vector = library.embed_query("text", caption) if caption is not None and kind != "text" else None
    sets = classify_one(library, kind, vector, caption_vector, names, int(top))  # an unknown set: NotFoundError, 404
    return jsonify({"modality": kind, "sets": sets})
