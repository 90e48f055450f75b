"""mmsearch migrate-vectors (issue #16): a populated data dir's vector index moved from FAISS files to milvus-lite
and back, filled from SQL and verified before it is reported; the same searches answer alike before and after;
every refusal is one line (or one JSON document), exit 1, with nothing changed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmsearch.index_cache import IndexCache
from mmsearch.library import Library
from mmsearch.modalities import MODALITIES
from mmsearch.search.milvus_index import connect
from mmsearch.settings import load_settings

from .test_cli_contract import error_document


def searches(root: Path) -> dict[str, list[str]]:
    """A text query, an image query, a filtered one and a late-fusion one of several parts."""
    return {"text": ["a red apple"], "image": ["--image", str(root / "green.png")],
            "filtered": ["the sea", "--modality", "image"],
            "late fusion": ['"bread" + "a calm sea"', "--image", str(root / "red.jpg"), "--fusion", "rrf"]}


def top_ids(runner, root: Path, env: dict | None = None) -> dict[str, list[int]]:
    found = {}
    for name, args in searches(root).items():
        result = runner("search", *args, "-k", "10", "--json", extra_env=env)
        assert result.exit_code == 0, (name, result.stderr)
        found[name] = [hit["id"] for hit in json.loads(result.stdout)["results"]]
        assert found[name], name
    return found


def faiss_files(data_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(data_dir.glob("vectors.*"))}


@pytest.fixture
def indexed(runner, collection, settings):
    root, _ = collection
    assert runner("index", str(root), "--json").exit_code == 0
    library = Library(settings, existing=True)
    sql = {space: library.store.vector_count(space) for space in MODALITIES}
    assert all(sql.values())  # every modality has vectors to move
    return root, library


def moved_ids(settings, store: str) -> dict[str, list[int]]:
    """Each part's vector ids as a Library on that store opens it; it must find the part fresh (migrated, not
    built on first use)."""
    library = Library(settings.replace(vector_store=store), existing=True)
    index = library.index()
    assert library.last_sync.action == "fresh"
    return {space: sorted(index.parts[space].ids().tolist()) for space in MODALITIES}


def test_faiss_to_milvus_lite_and_back(runner, indexed, settings, data_dir, tmp_path):
    root, library = indexed
    sql = {space: library.store.vector_count(space) for space in MODALITIES}
    sql_ids = {space: sorted(library.store.vector_ids(space).tolist()) for space in MODALITIES}
    before, files = top_ids(runner, root), faiss_files(data_dir)
    target = f"milvus:{tmp_path / 'v.db'}"

    result = runner("migrate-vectors", "--to", target, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["vectors"] == sql and report["to"] == target and report["from"] == "faiss"
    assert report["problems"] == [] and report["removed"] == []
    assert report["setting"] == {"config": f'vector_store = "{target}"', "env": f"MMSEARCH_VECTOR_STORE={target}"}
    assert moved_ids(settings, target) == sql_ids
    assert faiss_files(data_dir) == files  # the old store is kept without --remove-source

    milvus = {"MMSEARCH_VECTOR_STORE": target}
    assert top_ids(runner, root, milvus) == before
    assert runner("verify", extra_env=milvus).exit_code == 0
    human = runner("migrate-vectors", "--to", target, extra_env={"MMSEARCH_VECTOR_STORE": "faiss"})
    assert human.exit_code == 0 and f"MMSEARCH_VECTOR_STORE={target}" in human.stdout
    assert f"{sum(sql.values())} vectors" in human.stdout  # a second run to the same store: built anew

    back = runner("migrate-vectors", "--to", "faiss", "--remove-source", "--json", extra_env=milvus)
    assert back.exit_code == 0, back.stdout + back.stderr
    report = json.loads(back.stdout)
    assert report["vectors"] == sql and report["from"] == target and report["to"] == "faiss"
    assert report["removed"] and connect(target[len("milvus:"):]).list_collections() == []
    assert moved_ids(settings, "faiss") == sql_ids
    assert top_ids(runner, root) == before
    assert runner("verify").exit_code == 0


def test_faiss_files_are_removed_only_when_asked(runner, indexed, data_dir):
    assert runner("migrate-vectors", "--to", "milvus:v.db", "--remove-source").exit_code == 0
    assert not list(data_dir.glob("vectors.*.faiss")) and (data_dir / "v.db").exists()
    assert runner("verify", extra_env={"MMSEARCH_VECTOR_STORE": "milvus:v.db"}).exit_code == 0


def test_a_store_that_does_not_verify_is_refused_and_the_source_kept(runner, indexed, data_dir, monkeypatch):
    files = faiss_files(data_dir)
    monkeypatch.setattr(IndexCache, "problems", lambda self: ["image index: 1 vector missing"])
    error = error_document(runner("migrate-vectors", "--to", "milvus:v.db", "--remove-source", "--json"), 1)
    assert "image index: 1 vector missing" in error["message"] and "vector_store" in error["message"]
    assert faiss_files(data_dir) == files


@pytest.mark.parametrize("to, current, fragment", [
    ("milvus", {}, "not faiss, milvus:PATH.db or milvus:http://HOST:PORT"),
    ("faiss", {}, "already"),
    ("milvus:v.db", {"MMSEARCH_VECTOR_STORE": "milvus:{data}/v.db"}, "already"),  # relative: in the data dir
    ("milvus://127.0.0.1:1", {}, "cannot open Milvus at http://127.0.0.1:1"),  # nothing listens there
    ("milvus:mmsearch.db", {}, "not a milvus-lite store"),  # the SQLite database itself
])
def test_refusals_are_one_line_and_change_nothing(runner, indexed, data_dir, to, current, fragment):
    env = {key: value.format(data=data_dir) for key, value in current.items()}
    files, sqlite = faiss_files(data_dir), (data_dir / "mmsearch.db").read_bytes()
    plain = runner("migrate-vectors", "--to", to, extra_env=env)
    assert plain.exit_code == 1 and plain.stdout == "", plain.stdout
    assert len(plain.stderr.strip().splitlines()) == 1 and fragment in plain.stderr, plain.stderr
    assert fragment in error_document(runner("migrate-vectors", "--to", to, "--json", extra_env=env), 1)["message"]
    assert faiss_files(data_dir) == files and (data_dir / "mmsearch.db").read_bytes() == sqlite


def test_without_pymilvus_it_says_how_to_install_it(runner, indexed, data_dir, monkeypatch):
    files = faiss_files(data_dir)
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if it were not installed
    error = error_document(runner("migrate-vectors", "--to", "milvus:v.db", "--json"), 1)
    assert error["message"] == "vector_store milvus needs pymilvus: pip install 'mmsearch[milvus]'"
    assert faiss_files(data_dir) == files and not (data_dir / "v.db").exists()


def test_nothing_to_move(runner, tmp_path):
    missing = tmp_path / "no" / "dir"
    assert error_document(runner("migrate-vectors", "--to", "milvus:v.db", "--data-dir", str(missing), "--json"),
                          1)["code"] == "data_dir"
    assert not (tmp_path / "no").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    error = error_document(runner("migrate-vectors", "--to", "milvus:v.db", "--data-dir", str(empty), "--json"), 1)
    assert "nothing indexed yet" in error["message"] and not (empty / "v.db").exists()


def test_the_issues_milvus_url_spelling_is_a_server_address():
    assert load_settings(env={"MMSEARCH_VECTOR_STORE": "milvus://db.example:19530"}).vector_store == \
        "milvus:http://db.example:19530"
