"""Several processes on one Milvus server (issue #16): data dirs that share a server keep apart, processes
that share a database share its collections, take turns changing them, and see each other's changes.

The server is milvus-lite's own gRPC server (``milvus-lite server``), reached as vector_store
milvus:http://127.0.0.1:PORT, the way a Milvus standalone or cluster is."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mmsearch.library import Library
from mmsearch.search.request import QueryPart, SearchRequest

from .media import picture

DEADLINE = 120  # seconds: a guard against a hung process, never a measure of speed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(ready, what: str, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not ready():
        if process is not None and process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up: {log.read_text()[-2000:] if log else ''}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """A Milvus server for the module: its URI as vector_store takes it."""
    base = tmp_path_factory.mktemp("milvus-server")
    port = _free_port()
    log = base / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(["milvus-lite", "server", "--data-dir", str(base / "data"), "--host",
                                    "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)

    def answers() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    try:
        _wait(answers, "milvus-lite server", process, log)
        yield f"milvus:http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def folder(root: Path, names: list[str], start: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names, start=start):
        picture(n, (32, 32)).save(root / f"{name}.png")
    return root


def paths(library: Library, words: str = "shapes") -> set[str]:
    return {Path(hit.item.path).name for hit in library.search(SearchRequest([QueryPart("text", words)], k=100)).results}


def test_two_data_dirs_on_one_milvus_server_keep_their_own_vectors(milvus_server, settings, tmp_path):
    """Collections are named by the database's id: a second data dir's index run does not replace the first's."""
    one = Library(settings.replace(data_dir=str(tmp_path / "one"), vector_store=milvus_server))
    one.run_index([str(folder(tmp_path / "a", ["a0", "a1", "a2"]))])
    two = Library(settings.replace(data_dir=str(tmp_path / "two"), vector_store=milvus_server))
    two.run_index([str(folder(tmp_path / "b", ["b0", "b1"], start=10))])
    assert one.verify() == [] and two.verify() == []
    assert paths(Library(one.settings)) == {"a0.png", "a1.png", "a2.png"}
    assert paths(Library(two.settings)) == {"b0.png", "b1.png"}


@pytest.fixture
def on_postgres(milvus_server, settings, postgres, tmp_path):
    """Settings for processes that share one PostgreSQL database and one Milvus server, each with its own
    data dir (as on separate machines)."""
    url = postgres.new_database()
    return lambda name: settings.replace(data_dir=str(tmp_path / name), db_url=url, vector_store=milvus_server)


def test_a_process_uses_what_another_one_caught_up_and_takes_turns(on_postgres, tmp_path):
    """A server whose collection another process already brought up to SQL adopts it (a fresh sync, no second
    catch-up of its own), and a catch-up waits while another process holds the database's lock."""
    indexer = Library(on_postgres("indexer"))
    indexer.run_index([str(folder(tmp_path / "m", ["p0", "p1"]))])
    server = Library(on_postgres("server"))
    assert paths(server) == {"p0.png", "p1.png"}
    indexer.run_index([str(folder(tmp_path / "m", ["p2"], start=5))])  # SQL and Milvus move on together
    assert not server.cache.is_current()
    server.index(refresh=True)
    assert server.last_sync.action == "fresh" and paths(server) == {"p0.png", "p1.png", "p2.png"}

    held, done = threading.Event(), threading.Event()
    release = threading.Event()

    def hold() -> None:
        with indexer.store.shared.lock("vectors"):
            held.set()
            release.wait(DEADLINE)
    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(DEADLINE)
    indexer.store.remove_ids(indexer.store.ids_under(str(tmp_path / "m" / "p0.png")))  # SQL only
    refresher = threading.Thread(target=lambda: (server.index(refresh=True), done.set()))
    refresher.start()
    assert not done.wait(1.0), "the catch-up went ahead while another process held the lock"
    release.set()
    holder.join(DEADLINE)
    refresher.join(DEADLINE)
    assert done.is_set() and server.last_sync.action == "caught-up"
    assert paths(server) == {"p1.png", "p2.png"} and server.verify() == [] and indexer.verify() == []


def _serve(settings, port: int, log: Path) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")},
           "MMSEARCH_DATA_DIR": str(settings.data_path), "MMSEARCH_MODEL": "tiny",
           "MMSEARCH_DB_URL": settings.db_url, "MMSEARCH_VECTOR_STORE": settings.vector_store}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "mmsearch", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _found(port: int) -> set[str]:
    query = urllib.request.quote("shapes")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q={query}&k=100", timeout=30) as answer:
        return {Path(hit["path"]).name for hit in json.load(answer)["results"]}


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_two_servers_see_a_concurrent_index_run_without_restart(on_postgres, runner, tmp_path):
    """Two `serve` processes (their own data dirs, one PostgreSQL database, one Milvus server) answer the
    same collection; an index run while both are up adds items that both then find."""
    first = on_postgres("indexer")
    media = folder(tmp_path / "media", ["q0", "q1", "q2"])
    Library(first).run_index([str(media)])
    servers = []
    try:
        for name in ("east", "west"):
            port = _free_port()
            log = tmp_path / f"{name}.log"
            servers.append((port, _serve(on_postgres(name), port, log), log))
        for port, process, log in servers:
            _wait(lambda: _answers(port), f"serve on {port}", process, log)
            assert _found(port) == {"q0.png", "q1.png", "q2.png"}
        folder(media, ["q3", "q4"], start=7)
        env = {"MMSEARCH_DB_URL": first.db_url, "MMSEARCH_VECTOR_STORE": first.vector_store,
               "MMSEARCH_DATA_DIR": str(first.data_path)}
        assert runner("index", str(media), "--json", extra_env=env).exit_code == 0
        want = {"q0.png", "q1.png", "q2.png", "q3.png", "q4.png"}
        for port, process, log in servers:
            _wait(lambda: _found(port) == want, f"the new items on {port}", process, log)
    finally:
        for _, process, _ in servers:
            process.terminate()
            process.wait(30)
    for name in ("indexer", "east", "west"):
        assert Library(on_postgres(name)).verify() == [], name


def test_an_unreachable_milvus_server_is_one_line(runner, collection):
    """gRPC's own words (its repr runs over several lines and names a private class)."""
    root, _ = collection
    dead = f"milvus:http://127.0.0.1:{_free_port()}"
    result = runner("index", str(root), extra_env={"MMSEARCH_VECTOR_STORE": dead})
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot open Milvus at {dead[len('milvus:'):]}: ") and "Connection refused" in lines[0]
    assert "_InactiveRpcError" not in lines[0]
    stats = json.loads(runner("stats", "--json").stdout)  # said before anything was embedded
    assert stats["by_modality"] == {"image": 0, "audio": 0, "text": 0}
