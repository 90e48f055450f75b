"""Issue 11, defects 3, 5 and 6 as measured: every probe gets a JSON 4xx that names what was wrong (never a
500, never a non-finite number in a 200), and the limits that bound a request's cost are settings."""
from __future__ import annotations

import io
import json
import math

import pytest

from mmsearch.library import Library
from mmsearch.web import create_app
from mmsearch.settings import load_settings

from .media import make_collection


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    make_collection(base / "media")
    settings = load_settings({"data_dir": str(base / "data"), "model": "tiny", "batch_size": 8,
                              "query_max_parts": 8, "explain_max_rows": 40}, env={})
    Library(settings).run_index([base / "media"])
    return create_app({"TESTING": True, "MMSEARCH": settings.replace(admin_token="t0ken")}).test_client()


def refused(response, fragment: str) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    message = response.get_json()["error"]["message"]
    assert fragment in message, message
    return message


def finite(document) -> bool:
    """No Infinity or NaN anywhere: what Python's json writes for them is not JSON."""
    if isinstance(document, float):
        return math.isfinite(document)
    if isinstance(document, dict):
        return all(finite(v) for v in document.values())
    if isinstance(document, list):
        return all(finite(v) for v in document)
    return True


@pytest.mark.parametrize("field", ["k", "offset", "rrf_k"])
@pytest.mark.parametrize("value", ["--5", "+-3", "- 4", "5-", "0x10", "1e3"])
def test_malformed_integers_are_400(api, field, value):
    refused(api.get("/api/search", query_string={"q": "x", field: value}), field)


@pytest.mark.parametrize("body", [{"min_size": 2 ** 63}, {"max_size": 1e20}, {"min_size": "99999999999999999999"},
                                  {"max_size": float(2 ** 70)}])
def test_sizes_past_64_bits_are_400(api, body):
    refused(api.post("/api/search", json={"text": "x", "filters": body}), "size")


@pytest.mark.parametrize("field", ["date_from", "date_to"])
@pytest.mark.parametrize("date", ["9999-12-31", "0001-01-01", "2300-01-01", "1600-06-01T00:00:00"])
@pytest.mark.parametrize("date_field", ["mtime", "taken_at"])
def test_dates_of_any_year_search(api, field, date, date_field):
    """Any year a date can be written with is a valid filter; far ones keep everything or nothing."""
    response = api.get("/api/search", query_string={"q": "x", field: date, "date_field": date_field, "k": 100})
    assert response.status_code == 200, response.data[:300]
    if date_field == "mtime":  # every file here was written today
        keeps_all = (field == "date_from") == (date < "1970")
        assert len(response.get_json()["results"]) == (len(everything(api)) if keeps_all else 0)


def everything(api) -> list:
    return api.get("/api/search", query_string={"q": "x", "k": 100}).get_json()["results"]


def test_like_with_a_huge_id_in_the_query_text_is_400(api):
    refused(api.get("/api/search", query_string={"q": "like:" + "9" * 25}), "item id")
    assert api.get("/api/search", query_string={"q": "like:" + "9" * 18}).status_code == 404


@pytest.mark.parametrize("field", ["path_prefix", "path_glob"])
def test_lone_surrogates_are_400(api, field):
    body = '{"text": "x", "filters": {"%s": "/a\\ud800b"}}' % field
    refused(api.post("/api/search", data=body, content_type="application/json"), "UTF-8")
    # a query string cannot carry one: its bytes decode with replacement characters, and search as usual
    assert api.get(f"/api/search?q=x&{field}=%ED%A0%80").status_code == 200


def test_deeply_nested_json_is_400(api):
    body = '{"text": "x", "filters": ' + "[" * 5000 + "]" * 5000 + "}"
    refused(api.post("/api/search", data=body, content_type="application/json"), "nested")
    refused(api.post("/api/search", data="[" * 100_000, content_type="application/json"), "nested")


def test_query_syntax_parts_are_capped_however_written(api):
    text = " + ".join(f"{i + 1}:w{i}" for i in range(9))  # weights differ: nine parts
    message = refused(api.post("/api/search", json={"text": text}), "at most 8 query parts")
    assert "query_max_parts" in message
    parts = [{"kind": "text", "value": f"w{i}"} for i in range(5)]
    refused(api.post("/api/search", json={"text": "a + 2:b + 3:c + 4:d", "parts": parts}), "at most 8")
    assert api.post("/api/search", json={"text": "a + 2:b + 3:c", "parts": parts}).status_code == 200


def test_explain_output_is_bounded(api):
    parts = [{"kind": "text", "value": f"w{i}"} for i in range(5)]
    message = refused(api.post("/api/search", json={"parts": parts, "k": 9, "explain": True}), "explain_max_rows")
    assert "45" in message
    assert api.post("/api/search", json={"parts": parts, "k": 8, "explain": True}).status_code == 200
    assert api.post("/api/search", json={"parts": parts, "k": 9}).status_code == 200


def test_query_text_length_is_bounded(api):
    refused(api.get("/api/search", query_string={"q": "word " * 1000}), "query_max_chars")


@pytest.mark.parametrize("fusion", ["early", "rrf", "relative", "dbsf"])
@pytest.mark.parametrize("weight", [1.7e308, -1.7e308, 1e300])
def test_huge_weights_are_400_not_infinity(api, fusion, weight):
    body = {"parts": [{"kind": "text", "value": "a", "weight": weight}, {"kind": "text", "value": "b"}],
            "fusion": fusion}
    refused(api.post("/api/search", json=body), "query_max_weight")


def test_huge_weights_in_the_syntax_are_400(api):
    refused(api.get("/api/search", query_string={"q": "9" * 400 + ":cat + dog"}), "query_max_weight")


@pytest.mark.parametrize("fusion", ["early", "rrf", "relative", "dbsf"])
def test_the_largest_allowed_weights_give_finite_json(api, fusion):
    body = {"parts": [{"kind": "text", "value": "a", "weight": 1000}, {"kind": "text", "value": "b", "weight": -1000},
                      {"kind": "text", "value": "c", "weight": 1e-300}], "fusion": fusion, "explain": True}
    response = api.post("/api/search", json=body)
    assert response.status_code == 200, response.data[:300]
    assert finite(json.loads(response.data)) and response.get_json()["results"]


def test_limits_are_settings_with_defaults():
    settings = load_settings({}, env={})
    assert (settings.query_max_parts, settings.query_max_chars, settings.query_max_weight,
            settings.json_max_depth, settings.explain_max_rows) == (32, 4000, 1000.0, 32, 4000)


@pytest.mark.parametrize("name", ["n" * 300 + ".txt", "a\x01b\tcé" * 60 + ".txt"])
def test_long_or_strange_upload_names_are_stored_short(api, name):
    response = api.post("/api/items", headers={"Authorization": "Bearer t0ken"},
                        data={"file": (io.BytesIO(b"a note about nothing"), name)}, content_type="multipart/form-data")
    assert response.status_code == 201, response.data[:300]
    stored = response.get_json()["name"]
    assert stored.endswith(".txt") and len(stored) < 130 and stored.isprintable()
    assert api.delete(f"/api/items/{response.get_json()['id']}", headers={"Authorization": "Bearer t0ken"}
                      ).status_code == 200
