"""Security headers: the page's CSP (no inline script or style, no framing), nosniff, the referrer policy,
/media's sandboxing CSP, and file names in Content-Disposition that are always a valid header."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from mmsearch.library import Library
from mmsearch.settings import load_settings

STRICT_REFERRER = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
NAMES = ["line\nbreak.txt", "carriage\rreturn.txt", "café ünïcode.txt", "日本語.txt", 'quote"and\\slash.txt',
         "tab\there.txt"]


def _directives(policy: str) -> dict[str, list[str]]:
    out = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("headers")
    root = base / "media"
    root.mkdir()
    for n, name in enumerate(NAMES):
        (root / name).write_text(f"note number {n} about unusual file names")
    settings = load_settings({"data_dir": str(base / "data"), "model": "tiny", "batch_size": 8}, env={})
    Library(settings).run_index([root])
    items = Library(settings).store.items_by_id(range(1, 100)).values()
    return {"settings": settings, "items": {Path(i.path).name: i for i in items}}


@pytest.fixture(scope="module")
def web(world):
    from mmsearch.web import create_app
    return create_app({"TESTING": True, "MMSEARCH": world["settings"]}).test_client()


def test_the_page_sends_a_strict_csp_and_frame_protection(web):
    response = web.get("/")
    assert response.status_code == 200
    csp = _directives(response.headers["Content-Security-Policy"])
    for directive in ("default-src", "script-src", "style-src", "connect-src"):
        assert csp[directive] == ["'self'"], (directive, csp)
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]
    assert "blob:" in csp["img-src"] and "blob:" in csp["media-src"]  # picked files and recordings
    assert not any("unsafe" in value for values in csp.values() for value in values)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in STRICT_REFERRER
    assert "microphone=(self)" in response.headers["Permissions-Policy"]


class _Inline(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and not names.get("src"):
            self.found.append("inline <script>")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if name in ("src", "href", "action") and value and ":" in value.split("/")[0]:
                if value != "data:,":  # the empty favicon (img-src data:)
                    self.found.append(f"{tag} {name}={value}")


def test_the_page_has_no_inline_script_or_style(web):
    html = web.get("/").get_data(as_text=True)
    assert "<script" in html and "<link" in html  # the page itself, not an error
    parser = _Inline()
    parser.feed(html)
    assert parser.found == []
    template = (Path(__file__).resolve().parents[1] / "web" / "templates" / "index.html").read_text()
    parser = _Inline()
    parser.feed(template)
    assert parser.found == []


@pytest.mark.parametrize("path", ["/api/health", "/api/stats", "/api/items/999999", "/static/app.js"])
def test_every_response_has_nosniff_and_no_framing(web, path):
    response = web.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] in STRICT_REFERRER
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_media_keeps_its_sandboxing_csp(web, world):
    item = world["items"]["日本語.txt"]
    response = web.get(f"/api/items/{item.id}/media")
    assert response.status_code == 200
    csp = _directives(response.headers["Content-Security-Policy"])
    assert "sandbox" in csp and csp["default-src"] == ["'none'"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.mimetype == "text/plain"


@pytest.mark.parametrize("name", NAMES)
def test_file_names_in_content_disposition_are_encoded_safely(web, world, name):
    item = world["items"][name]
    response = web.get(f"/api/items/{item.id}/media")
    assert response.status_code == 200, response.data[:300]
    assert response.get_data(as_text=True).startswith("note number")
    disposition = response.headers["Content-Disposition"]
    assert disposition.isascii() and disposition.isprintable(), disposition  # one line of plain ASCII
    assert disposition.startswith("inline; filename=")
    if "filename*=UTF-8''" in disposition:  # the exact name for clients that read RFC 6266
        encoded = unquote(disposition.split("filename*=UTF-8''", 1)[1])
        assert encoded == re.sub(r"[\x00-\x1f\x7f]", "_", name)
