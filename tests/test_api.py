"""The JSON API through Flask's test client: every endpoint, each error path, and bad input of every kind."""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mmsearch.library import Library
from mmsearch.settings import load_settings

from .media import make_collection, picture, tone_wav

TOKEN = "s3cret-token"
LIMIT = 2 * 1024 * 1024
TRAVERSALS = ["../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/etc/passwd",
              "%2Fetc%2Fpasswd", "..", "..%2f", "1/../2", "C:%5Cwindows", "1%00", "-1", "0", "1.5", "1e3",
              "99999999999999999999999", "%20", "１"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One indexed collection for the whole module (indexing once keeps the module fast)."""
    base = tmp_path_factory.mktemp("api")
    root = base / "media"
    expected = make_collection(root)
    settings = load_settings({"data_dir": str(base / "data"), "model": "tiny", "batch_size": 8,
                              "admin_token": TOKEN, "max_upload_bytes": LIMIT}, env={})
    Library(settings).run_index([root])
    by_name = {Path(i.path).name: i for i in Library(settings).store.items_by_id(range(1, 100)).values()}
    return {"base": base, "root": root, "settings": settings, "expected": expected, "items": by_name}


@pytest.fixture(scope="module")
def api(world):
    from mmsearch.web import create_app
    app = create_app({"TESTING": True, "MMSEARCH": world["settings"]})
    return app.test_client()


def error_of(response, status: int | tuple[int, ...]) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.data[:300])
    assert response.mimetype == "application/json", response.data[:300]
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return body["error"]


def ids(response) -> list[int]:
    assert response.status_code == 200, response.data[:300]
    return [r["id"] for r in response.get_json()["results"]]


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    picture(seed).save(buffer, "PNG")
    return buffer.getvalue()


# --- health, stats, openapi -------------------------------------------------------------------------
def test_health_and_stats(api, world):
    assert api.get("/api/health").get_json() == {"status": "ok"}
    stats = api.get("/api/stats").get_json()
    assert stats == Library(world["settings"]).stats()
    assert stats["by_modality"] == {m: world["expected"][m] for m in ("image", "audio", "text")}


def test_openapi_describes_every_api_route(api):
    document = api.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes = {rule.rule.replace("<item_id>", "{item_id}") for rule in api.application.url_map.iter_rules()
              if rule.rule.startswith("/api")}
    assert routes == set(document["paths"])
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert operation["responses"], (path, method)


def test_unknown_route_and_wrong_method_are_json(api):
    assert error_of(api.get("/api/nothing-here"), 404)["code"] == "not_found"
    error = error_of(api.put("/api/search"), 405)
    assert error["code"] == "method_not_allowed"
    assert error_of(api.get("/api/items"), 405)


# --- search -----------------------------------------------------------------------------------------
def test_get_search_shape(api, world):
    response = api.get("/api/search?q=red+round+shapes&k=5")
    body = response.get_json()
    assert response.status_code == 200 and len(body["results"]) == 5 and body["next"] == 5
    assert isinstance(body["took_ms"], float)
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    for result in body["results"]:
        assert {"id", "path", "modality", "score", "media_url", "thumbnail_url", "metadata"} <= set(result)
        assert result["media_url"] == f"/api/items/{result['id']}/media"
        assert (result["thumbnail_url"] is None) == (result["modality"] == "text")
    red = world["items"]["red.jpg"]
    captioned = [r for r in body["results"] + api.get("/api/search?q=x&k=50").get_json()["results"]
                 if r["id"] == red.id]
    assert captioned[0]["caption"] == "a red picture with round shapes"


def test_get_search_paging_and_modalities(api):
    first = api.get("/api/search?q=sea&k=3").get_json()
    second = api.get(f"/api/search?q=sea&k=3&offset={first['next']}").get_json()
    everything = ids(api.get("/api/search?q=sea&k=6"))
    assert [r["id"] for r in first["results"] + second["results"]] == everything
    only = api.get("/api/search?q=sea&k=50&modality=text&modality=audio").get_json()["results"]
    assert only and {r["modality"] for r in only} == {"text", "audio"}
    assert {r["modality"] for r in api.get("/api/search?q=sea&k=50&modality=image,text").get_json()["results"]} \
        == {"image", "text"}


def test_post_json_text_like_parts_filters(api, world):
    items = world["items"]
    assert ids(api.post("/api/search", json={"text": "calm sea", "k": 4})) == \
        ids(api.get("/api/search?q=calm+sea&k=4"))
    assert ids(api.post("/api/search", json={"like": items["green.png"].id, "k": 3}))[0] == items["green.png"].id
    image = base64.b64encode((world["root"] / "green.png").read_bytes()).decode()
    found = api.post("/api/search", json={"parts": [{"kind": "image", "value": image}], "k": 3,
                                          "modality": ["image"]}).get_json()["results"]
    assert found[0]["id"] == items["green.png"].id and found[0]["score"] > 0.999
    sound = base64.b64encode((world["root"] / "beep.wav").read_bytes()).decode()
    assert ids(api.post("/api/search", json={"parts": [{"kind": "audio", "value": sound}], "k": 1,
                                             "modality": "audio"})) == [items["beep.wav"].id]
    prefix = str(world["root"] / "sub dir")
    filtered = api.post("/api/search", json={"text": "anything", "k": 50,
                                             "filters": {"path_prefix": prefix}}).get_json()["results"]
    assert filtered and all(r["path"].startswith(prefix) for r in filtered)
    assert len(filtered) == 3  # blue.webp, yellow.bmp, poem.txt


def test_fusion_explain_and_weights(api, world):
    items = world["items"]
    body = api.post("/api/search", json={"text": "bread", "like": items["poem.txt"].id, "fusion": "rrf",
                                         "explain": True, "weights": [1, 0.5], "k": 3}).get_json()
    assert [p["weight"] for p in body["parts"]] == [1.0, 0.5]
    assert all(len(r["parts"]) == 2 and r["parts"][0]["rank"] for r in body["results"])
    negative = ids(api.post("/api/search", json={"text": 'bread - "sea"', "k": 20, "fusion": "early"}))
    assert negative
    assert (body["fusion"], body["index"]) == ("rrf", "modality")  # the data dir default: modality indexes
    for result in body["results"]:  # each part scored against each vector the item has
        assert set(result["parts"][0]["vectors"]) == {"content"} | ({"caption"} if result.get("caption") else set())
    fused = api.get("/api/search", query_string={"q": "bread", "fusion": "relative", "index": "fused"}).get_json()
    assert (fused["fusion"], fused["index"]) == ("relative", "fused") and fused["results"]
    assert api.post("/api/search", json={"text": "bread"}).get_json()["index"] == "fused"  # early: fused only


def test_booleans_are_true_false_or_1_0_in_a_json_body_as_in_a_query_string(api):
    """README: booleans are true/false (or 1/0); a JSON body's 1 and 0 are not refused while "1" is taken."""
    def lexical(response) -> list:
        assert response.status_code == 200, response.get_json()
        return [part.get("lexical") for r in response.get_json()["results"] for part in r["parts"]]

    on = lexical(api.post("/api/search", json={"text": "bread", "hybrid": True, "explain": True}))
    assert on and all(entry is not None for entry in on)
    for yes in (1, "1", "true"):
        assert lexical(api.post("/api/search", json={"text": "bread", "hybrid": yes, "explain": yes})) == on
    assert lexical(api.get("/api/search?q=bread&hybrid=1&explain=1")) == on
    for no in (0, "0", False):
        assert set(lexical(api.post("/api/search", json={"text": "bread", "hybrid": no, "explain": True}))) == {None}
    for bad in (2, -1, 0.5, "yes", None):
        response = api.post("/api/search", json={"text": "bread", "hybrid": bad})
        assert response.status_code == 400 and response.get_json()["error"]["message"].startswith("hybrid "), bad


def test_multipart_image_and_audio_files(api, world):
    items = world["items"]
    with open(world["root"] / "sub dir" / "blue.webp", "rb") as handle:
        response = api.post("/api/search", data={"image": (handle, "blue.webp"), "k": "2", "modality": "image"},
                            content_type="multipart/form-data")
    assert ids(response)[0] == items["blue.webp"].id
    with open(world["root"] / "beep.wav", "rb") as handle:
        response = api.post("/api/search", data={"audio": (handle, "x.wav"), "text": "a beep", "k": "3",
                                                 "fusion": "relative", "explain": "true"},
                            content_type="multipart/form-data")
    assert response.status_code == 200 and len(response.get_json()["parts"]) == 2


def test_text_file_as_image_query_is_a_400(api):
    response = api.post("/api/search", data={"image": (io.BytesIO(b"just some words\n" * 20), "notes.png")},
                        content_type="multipart/form-data")
    assert "image" in error_of(response, 400)["message"]
    response = api.post("/api/search", data={"audio": (io.BytesIO(b"RIFF....garbage"), "x.wav")},
                        content_type="multipart/form-data")
    assert error_of(response, 400)
    response = api.post("/api/search", json={"parts": [{"kind": "image", "value": base64.b64encode(b"text").decode()}]})
    assert error_of(response, 400)


def test_query_text_that_names_a_file_is_searched_as_words(api, world):
    """The web never reads a file named in a query: paths in the text are words."""
    secret = world["root"] / "green.png"
    for text in [str(secret), f"../../{secret.name}", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "file:///etc/passwd",
                 f"0.5:{secret} + like:{world['items']['red.jpg'].id}"]:
        body = api.post("/api/search", json={"text": text, "explain": True, "k": 3}).get_json()
        assert body["results"], text
        assert {p["kind"] for p in body["parts"]} <= {"text", "item"}, (text, body["parts"])
        assert ids(api.get("/api/search", query_string={"q": text, "k": 2}))


@pytest.mark.parametrize("body", [
    {}, {"text": ""}, {"text": "   "}, {"text": 5}, {"text": ["a"]}, {"text": "a\x00b"},
    {"text": "x", "k": 0}, {"text": "x", "k": -3}, {"text": "x", "k": 1001}, {"text": "x", "k": 10 ** 30},
    {"text": "x", "k": "ten"}, {"text": "x", "k": True}, {"text": "x", "k": 2.5}, {"text": "x", "k": None, "offset": -1},
    {"text": "x", "offset": "many"}, {"text": "x", "fusion": "bogus"}, {"text": "x", "fusion": 3},
    {"text": "x", "modality": "video"}, {"text": "x", "modality": 5}, {"text": "x", "modality": [None]},
    {"text": "x", "filters": []}, {"text": "x", "filters": {"nope": 1}}, {"text": "x", "filters": {"min_size": -1}},
    {"text": "x", "filters": {"date_from": "yesterday"}}, {"text": "x", "filters": {"has_caption": "maybe"}},
    {"text": "x", "filters": {"date_field": "ctime"}}, {"text": "x", "filters": {"path_prefix": 7}},
    {"text": "x", "explain": "perhaps"}, {"text": "x", "weights": [1, 2]}, {"text": "x", "weights": ["a"]},
    {"text": "x", "dedupe": "fuzzy"}, {"text": "x", "dedupe": 2}, {"text": "x", "rrf_k": 0},
    {"text": "x", "index": "hnsw"}, {"text": "x", "index": "modality"}, {"text": "-x", "fusion": "rrf"},
    {"text": "x", "unknown_field": 1}, {"parts": {}}, {"parts": [1]}, {"parts": [{"kind": "video", "value": "x"}]},
    {"parts": [{"kind": "text"}]}, {"parts": [{"kind": "text", "value": "x", "weight": 0}]},
    {"parts": [{"kind": "text", "value": "x", "weight": "heavy"}]},
    {"parts": [{"kind": "text", "value": "x", "weight": float("nan")}]},
    {"parts": [{"kind": "image", "value": "not base64!!"}]}, {"parts": [{"kind": "image", "value": 12}]},
    {"parts": [{"kind": "item", "value": "../etc/passwd"}]}, {"parts": [{"kind": "item", "value": "/etc/passwd"}]},
    {"parts": [{"kind": "item", "value": -4}]}, {"parts": [{"kind": "text", "value": "x", "extra": 1}]},
    {"parts": [{"kind": "text", "value": "x"}] * 33}, {"like": "../etc/passwd"}, {"like": "/etc/passwd"},
    {"like": "%2e%2e%2f"}, {"like": 1.5}, {"like": True}, {"like": [1]}, {"text": "like:abc"}, {"text": '"unclosed'},
])
def test_bad_search_bodies_are_400(api, body):
    assert error_of(api.post("/api/search", json=body), 400)["code"] == "bad_request"


@pytest.mark.parametrize("raw, content_type", [
    (b"{bad json", "application/json"), (b"", "application/json"), (b"[1, 2]", "application/json"),
    (b'"text"', "application/json"), (b"\xff\xfe\x00", "application/json"), (b"null", "application/json"),
])
def test_malformed_json_is_400(api, raw, content_type):
    assert error_of(api.post("/api/search", data=raw, content_type=content_type), 400)


def test_wrong_content_type_is_415(api):
    assert error_of(api.post("/api/search", data=b"q=x", content_type="text/plain"), 415)


def test_bad_get_search_parameters(api):
    for query in ["", "q=", "q=x&k=0", "q=x&k=-1", "q=x&k=100000000000000000000", "q=x&k=abc", "q=x&modality=video",
                  "q=x&fusion=late", "q=x&offset=-2", "q=x&filters=%7B%7D", "q=x&like=..%2F1", "q=x&bogus=1"]:
        assert error_of(api.get("/api/search?" + query), 400), query
    assert error_of(api.get("/api/search?like=99999"), 404)["code"] == "not_found"


def test_bad_multipart_fields(api):
    cases = [({"text": "x", "k": "0"}, 400), ({"text": "x", "filters": "{not json"}, 400),
             ({"image": (io.BytesIO(b""), "empty.png")}, 400), ({"other": (io.BytesIO(b"x"), "a.png")}, 400),
             ({"text": "x", "like": "../../etc/passwd"}, 400), ({"k": "3"}, 400), ({"like": "424242"}, 404)]
    for data, status in cases:
        assert error_of(api.post("/api/search", data=data, content_type="multipart/form-data"), status), data


def test_unknown_like_is_404(api):
    assert error_of(api.post("/api/search", json={"like": 987654}), 404)["code"] == "not_found"
    assert error_of(api.post("/api/search", json={"text": "like:987654"}), 404)


# --- items --------------------------------------------------------------------------------------------
def test_item_detail(api, world):
    note = world["items"]["note.md"]
    body = api.get(f"/api/items/{note.id}").get_json()
    assert body["id"] == note.id and body["modality"] == "text" and "Groceries" in body["text"]
    assert body["path"] == note.path and body["thumbnail_url"] is None
    red = api.get(f"/api/items/{world['items']['red.jpg'].id}").get_json()
    assert red["caption"] and red["metadata"]["width"] == 96 and red["metadata"]["mime"] == "image/jpeg"


@pytest.mark.parametrize("suffix", ["", "/similar", "/media", "/thumbnail"])
def test_item_ids_that_are_not_ids(api, suffix):
    for raw in TRAVERSALS:
        response = api.get(f"/api/items/{raw}{suffix}")
        assert error_of(response, (400, 404)), (raw, suffix)
    assert error_of(api.get(f"/api/items/424242{suffix}"), 404)["code"] == "not_found"
    assert api.get("/api/health").status_code == 200  # still serving


def test_failed_items_are_not_served(api, world):
    broken = world["items"]["notanimage.png"]
    assert api.get(f"/api/items/{broken.id}").get_json()["metadata"]["status"] == "failed"
    assert error_of(api.get(f"/api/items/{broken.id}/media"), 404)
    assert error_of(api.get(f"/api/items/{broken.id}/similar"), 409)["code"] == "no_vector"


def test_similar(api, world):
    blue = world["items"]["blue.webp"]
    found = ids(api.get(f"/api/items/{blue.id}/similar?k=4"))
    assert len(found) == 4 and blue.id not in found
    assert ids(api.get(f"/api/items/{blue.id}/similar?k=4&exclude_self=false"))[0] == blue.id
    images = api.get(f"/api/items/{blue.id}/similar?k=20&modality=image").get_json()["results"]
    assert images and {r["modality"] for r in images} == {"image"}
    for query in ["k=0", "k=1001", "k=x", "modality=smell", "exclude_self=maybe", "nonsense=1"]:
        assert error_of(api.get(f"/api/items/{blue.id}/similar?{query}"), 400), query


def test_media_content_types_and_ranges(api, world):
    beep = world["items"]["beep.wav"]
    data = Path(beep.path).read_bytes()
    full = api.get(f"/api/items/{beep.id}/media")
    assert full.status_code == 200 and full.mimetype == "audio/wav" and full.data == data
    assert full.headers["Accept-Ranges"] == "bytes"
    part = api.get(f"/api/items/{beep.id}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = api.get(f"/api/items/{beep.id}/media", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == data[-10:]
    assert error_of(api.get(f"/api/items/{beep.id}/media", headers={"Range": f"bytes={len(data) + 5}-"}), 416)
    red = world["items"]["red.jpg"]
    assert api.get(f"/api/items/{red.id}/media").mimetype == "image/jpeg"
    note = api.get(f"/api/items/{world['items']['note.md'].id}/media")
    assert note.mimetype == "text/plain" and note.headers["X-Content-Type-Options"] == "nosniff"


def test_media_of_a_vanished_file_is_404(api, world, tmp_path):
    settings = world["settings"]
    root = world["base"] / "gone"
    root.mkdir()
    picture(40).save(root / "soon-gone.png")
    Library(settings).run_index([root])
    item_id = Library(settings).store.ids_under(str(root / "soon-gone.png"))[0]
    (root / "soon-gone.png").unlink()
    assert error_of(api.get(f"/api/items/{item_id}/media"), 404)["code"] == "file_missing"
    Library(settings).run_index([root])


def test_thumbnails_are_small_and_cached(api, world):
    settings = world["settings"]
    big = world["base"] / "big"
    big.mkdir()
    picture(11, (900, 600)).save(big / "wide.png")
    Library(settings).run_index([big])
    item_id = Library(settings).store.ids_under(str(big / "wide.png"))[0]
    response = api.get(f"/api/items/{item_id}/thumbnail")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.data))
    assert max(thumb.size) == settings.thumbnail_size and thumb.size[0] > thumb.size[1]
    cached = list((settings.data_path / "thumbnails").glob(f"{item_id}-*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.data
    assert api.get(f"/api/items/{item_id}/thumbnail").data == response.data
    wave = api.get(f"/api/items/{world['items']['beep.wav'].id}/thumbnail")
    assert wave.status_code == 200 and wave.mimetype == "image/png"
    assert Image.open(io.BytesIO(wave.data)).size == (320, 64)
    assert error_of(api.get(f"/api/items/{world['items']['note.md'].id}/thumbnail"), 404)


# --- serving new items while another process indexes ----------------------------------------------------
def test_new_items_from_another_index_run_are_served_without_restart(api, world):
    before = api.get("/api/stats").get_json()["items"]
    extra = world["base"] / "extra"
    extra.mkdir()
    picture(21).save(extra / "fresh.png")
    tone_wav(extra / "fresh.wav", 880.0)
    Library(world["settings"]).run_index([extra])  # as a separate 'manage.py index' run would
    assert api.get("/api/stats").get_json()["items"] == before + 2
    fresh = Library(world["settings"]).store.ids_under(str(extra / "fresh.png"))[0]
    with open(extra / "fresh.png", "rb") as handle:
        found = ids(api.post("/api/search", data={"image": (handle, "q.png"), "k": "1"},
                             content_type="multipart/form-data"))
    assert found == [fresh]
    assert api.get(f"/api/items/{fresh}/media").status_code == 200
    Library(world["settings"]).remove([str(extra)])
    assert fresh not in ids(api.get("/api/search?q=fresh&k=100"))


# --- uploads and deletions --------------------------------------------------------------------------------
def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_upload_and_delete_need_the_admin_token(api, world):
    data = {"file": (io.BytesIO(png_bytes(30)), "new.png")}
    assert error_of(api.post("/api/items", data=data, content_type="multipart/form-data"), 401)
    data = {"file": (io.BytesIO(png_bytes(30)), "new.png")}
    assert error_of(api.post("/api/items", data=data, content_type="multipart/form-data",
                             headers=auth("wrong")), 401)
    data = {"file": (io.BytesIO(png_bytes(30)), "new.png")}
    assert error_of(api.post("/api/items", data=data, content_type="multipart/form-data",
                             headers={"Authorization": TOKEN}), 401)
    red = world["items"]["red.jpg"].id
    assert error_of(api.delete(f"/api/items/{red}"), 401)
    assert error_of(api.delete(f"/api/items/{red}", headers=auth("nope")), 401)
    assert api.get(f"/api/items/{red}").status_code == 200


def test_uploads_are_off_without_a_token(world, tmp_path):
    from mmsearch.web import create_app
    settings = load_settings({"data_dir": str(tmp_path / "d"), "model": "tiny"}, env={})
    client = create_app({"TESTING": True, "MMSEARCH": settings}).test_client()
    data = {"file": (io.BytesIO(png_bytes(30)), "new.png")}
    assert error_of(client.post("/api/items", data=data, content_type="multipart/form-data",
                                headers=auth("")), 403)["code"] == "disabled"
    assert error_of(client.delete("/api/items/1", headers=auth()), 403)


def test_upload_indexes_and_delete_removes(api, world):
    settings = world["settings"]
    data = {"file": (io.BytesIO(png_bytes(31)), "../../../tmp/evil name.png")}
    response = api.post("/api/items", data=data, content_type="multipart/form-data", headers=auth())
    assert response.status_code == 201, response.data
    item = response.get_json()
    uploads = settings.data_path / "uploads"
    assert Path(item["path"]).parent == uploads and Path(item["path"]).name.endswith("evil_name.png")
    assert item["metadata"]["status"] == "ok"
    found = ids(api.post("/api/search", json={"parts": [{"kind": "image",
                                                          "value": base64.b64encode(png_bytes(31)).decode()}],
                                              "k": 1}))
    assert found == [item["id"]]
    assert api.delete(f"/api/items/{item['id']}", headers=auth()).get_json() == {"deleted": item["id"]}
    assert error_of(api.get(f"/api/items/{item['id']}"), 404)
    assert not Path(item["path"]).exists()
    assert item["id"] not in ids(api.get("/api/search?q=x&k=100"))
    assert error_of(api.delete(f"/api/items/{item['id']}", headers=auth()), 404)
    for raw in TRAVERSALS:
        assert error_of(api.delete(f"/api/items/{raw}", headers=auth()), (400, 404, 405)), raw


def test_bad_uploads(api, world):
    uploads = world["settings"].data_path / "uploads"
    before = set(os.listdir(uploads)) if uploads.exists() else set()
    cases = [
        ({"file": (io.BytesIO(b"plain words, not a picture\n" * 10), "words.png")}, 400, "bad_upload"),
        ({"file": (io.BytesIO(b"MZ\x90\x00"), "tool.exe")}, 415, "unsupported_media_type"),
        ({"file": (io.BytesIO(b"x"), "")}, (400, 415), None),
        ({"file": (io.BytesIO(b""), "empty.png")}, 400, None),
        ({"other": (io.BytesIO(png_bytes(1)), "a.png")}, 400, None),
        ({"file": (io.BytesIO(b"\x00" * 100), "/etc/passwd")}, 415, None),
        ({"file": (io.BytesIO(b"\x00" * 100), "..")}, 415, None),
    ]
    for data, status, code in cases:
        error = error_of(api.post("/api/items", data=data, content_type="multipart/form-data", headers=auth()), status)
        assert code is None or error["code"] == code, error
    assert error_of(api.post("/api/items", json={"file": "x"}, headers=auth()), 415)
    assert (set(os.listdir(uploads)) if uploads.exists() else set()) == before  # nothing left behind
    assert api.get("/api/stats").get_json()["failed"] == world["expected"]["failed"]


def test_oversize_bodies_are_413(api):
    big = b"\x00" * (LIMIT + 1)
    response = api.post("/api/items", data={"file": (io.BytesIO(big), "big.png")},
                        content_type="multipart/form-data", headers=auth())
    assert error_of(response, 413)["code"] == "payload_too_large"
    response = api.post("/api/search", data={"image": (io.BytesIO(big), "big.png")},
                        content_type="multipart/form-data")
    assert error_of(response, 413)
    assert error_of(api.post("/api/search", data=json.dumps({"text": "x" * (LIMIT + 1)}),
                             content_type="application/json"), 413)


def test_a_1gb_upload_is_refused_before_it_is_read(api):
    gib = 1024 ** 3

    class Endless(io.RawIOBase):
        """A 1 GiB body made up on the fly; reading more than a little of it fails the test."""
        served = 0

        def __init__(self):
            self.position = 0

        def readable(self):
            return True

        def seekable(self):
            return True

        def seek(self, offset, whence=0):
            self.position = {0: offset, 1: self.position + offset, 2: gib + offset}[whence]
            return self.position

        def tell(self):
            return self.position

        def readinto(self, buffer):
            Endless.served += len(buffer)
            assert Endless.served < 10 * 1024 * 1024, "the server read the oversize body"
            buffer[:] = b"\x00" * len(buffer)
            return len(buffer)

    for url, headers in (("/api/items", auth()), ("/api/search", {})):
        response = api.post(url, input_stream=Endless(), headers=headers,
                            content_type="multipart/form-data; boundary=xyz")
        assert error_of(response, 413)
    assert Endless.served == 0
    assert api.get("/api/health").status_code == 200


def test_uploads_are_refused_while_another_process_indexes(api, world):
    library = Library(world["settings"])
    with library.write_lock():
        response = api.post("/api/items", data={"file": (io.BytesIO(png_bytes(33)), "locked.png")},
                            content_type="multipart/form-data", headers=auth())
        assert error_of(response, 409)["code"] == "locked"
    uploads = world["settings"].data_path / "uploads"
    assert not any(name.endswith("locked.png") for name in os.listdir(uploads))


def test_the_page_is_served(api):
    page = api.get("/")
    assert page.status_code == 200 and b'id="q"' in page.data
    for asset in ("/static/app.js", "/static/app.css"):
        response = api.get(asset)
        assert response.status_code == 200
        response.close()
    assert b"http://" not in page.data and b"https://" not in page.data  # no CDN


def test_concurrent_searches_while_another_process_indexes(api, world):
    """Request threads search while the index is refreshed under them: every answer is a 200."""
    import threading
    app = api.application
    extra = world["base"] / "concurrent"
    extra.mkdir()
    failures: list[str] = []
    done = threading.Event()

    def searcher(number: int) -> None:
        client = app.test_client()
        n = 0
        while not done.is_set() or n < 3:
            response = client.get(f"/api/search?q=thread+{number}+{n}&k=5")
            if response.status_code != 200 or len(response.get_json()["results"]) != 5:
                failures.append(f"{response.status_code} {response.data[:200]!r}")
            n += 1

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    refreshes = app.extensions["mmsearch"].refreshes
    try:
        for n in range(3):
            picture(50 + n).save(extra / f"c{n}.png")
            Library(world["settings"]).run_index([extra])
    finally:
        done.set()
        for thread in threads:
            thread.join(60)
    assert not failures, failures[:3]
    assert app.extensions["mmsearch"].refreshes > refreshes
    names = {Path(r["path"]).name for r in api.get("/api/search?q=x&k=200").get_json()["results"]}
    assert {"c0.png", "c1.png", "c2.png"} <= names
    Library(world["settings"]).remove([str(extra)])


def test_file_field_names_are_never_paths(api, world):
    """A query file's name is ignored (its bytes are the query); an upload's name is reduced to a safe name."""
    for name in ["../../../etc/passwd", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "C:\\Windows\\win.ini"]:
        response = api.post("/api/search", data={"image": (io.BytesIO(png_bytes(3)), name), "k": "1"},
                            content_type="multipart/form-data")
        assert ids(response) == [world["items"]["yellow.bmp"].id], name
        response = api.post("/api/search", data={"image": (io.BytesIO(b"root:x:0:0"), name)},
                            content_type="multipart/form-data")
        assert error_of(response, 400), name
        response = api.post("/api/items", data={"file": (io.BytesIO(png_bytes(60)), name + ".png")},
                            content_type="multipart/form-data", headers=auth())
        assert response.status_code == 201, response.data
        item = response.get_json()
        assert Path(item["path"]).parent == world["settings"].data_path / "uploads"
        assert ".." not in item["path"] and api.delete(f"/api/items/{item['id']}", headers=auth()).status_code == 200
