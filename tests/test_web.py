"""The Flask app factory and the first API endpoints."""
from __future__ import annotations

from mmsearch.library import Library


def test_health(client):
    response = client.get("/api/health")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_stats_matches_the_library(client, settings, collection):
    root, expected = collection
    Library(settings).run_index([root])
    body = client.get("/api/stats").get_json()
    assert body["by_modality"] == {m: expected[m] for m in ("image", "audio", "text")}
    assert body == Library(settings).stats()


def test_unknown_route_is_not_a_500(client):
    assert client.get("/api/nothing-here").status_code == 404
