#!/usr/bin/env python3
"""Load on the JSON API: concurrent clients against `manage.py serve` over a 100k-item index.

Building the index: the sample collection is indexed for real with the ``tiny`` model (that records the
model, audio tower and vectors the normal way), then ``--items`` synthetic items are inserted straight
into SQL through ``search.store`` (ORM bulk inserts of ``Item`` rows with paths under /synthetic/ and
one random L2-normalised ``Vector`` each, stamped with the right encoder key and a fresh generation,
10k per transaction), SQLite planner statistics are refreshed as an index run does, and
``Library.index(refresh=True)`` builds the FAISS files from SQL. No file is
decoded or embedded for them, so 100k items take seconds. ``--data-dir`` keeps it for later runs.

Then, with the server on 127.0.0.1 (waitress, ``--threads``):

1. latency  one client sends ``--latency-queries`` different text queries (GET /api/search?q=..&k=10)
            one after another; the same queries run in this process through ``Library.search`` (parse,
            embed, FAISS, SQL join; in a worker thread, like the server's): the ratio API/in-process of
            the medians is the API's overhead (HTTP, JSON, generation check, result shaping).
2. load     ``--clients`` threads, each with a keep-alive connection, send queries for ``--seconds``;
            every query text is new (the server's small text-vector cache never hits).

Prints requests/s, p50/p99 latency, errors (must be 0) and the ratio; ``--json`` prints one document.

    python3 benchmarks/api_load.py [--items 100000] [--clients 8] [--seconds 20] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `serve` sets it: the in-process baseline is like for like

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select, func  # noqa: E402

from mmsearch.encoders.identity import encoder_key  # noqa: E402
from mmsearch.library import Library  # noqa: E402
from mmsearch.settings import load_settings  # noqa: E402
from mmsearch.search.request import SearchRequest  # noqa: E402
from mmsearch.search.tables import CONTENT, OK, Item, Vector, vector_bytes  # noqa: E402
from mmsearch.search.syntax import parse_query  # noqa: E402

WORDS = ("red green blue sea sky forest apple boat night sun sunset bell tone bread milk eggs calm grey "
         "round shapes beach mountain river city street dog cat bird music voice rain wind fire snow").split()


def build(data_dir: Path, items: int, log) -> tuple[Library, float]:
    settings = load_settings({"data_dir": str(data_dir), "model": "tiny"}, env={})
    library = Library(settings)
    have = library.store.counts()["items"]
    if have >= items:
        log(f"reusing {have} items in {data_dir}")
        started = time.perf_counter()
        library.index(refresh=True)
        return library, time.perf_counter() - started
    started = time.perf_counter()
    library.run_index([str(ROOT / "samples")])
    dim = int(library.models.stored()["dim"])
    image_key = encoder_key(library.models.stored())
    audio_key = library.store.get_meta("audio_key") or image_key
    rng = np.random.default_rng(0)
    modalities = np.array(["image", "text", "audio"])
    now = dt.datetime.now()
    chunk = 10_000
    with library.store.session() as session:
        first = (session.scalar(select(func.max(Item.id))) or 0) + 1
    for start in range(0, items - have, chunk):
        count = min(chunk, items - have - start)
        ids = np.arange(first + start, first + start + count)
        kinds = modalities[rng.integers(0, 3, count)]
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with library.store.session() as session:
            generation = library.store.bump_generation(session)
            session.execute(insert(Item), [
                {"id": int(i), "path": f"/synthetic/{i:07d}.{ {'image': 'jpg', 'text': 'txt', 'audio': 'wav'}[k] }",
                 "modality": str(k), "size": 1000 + int(i) % 5000, "mtime_ns": 1_700_000_000_000_000_000 + int(i),
                 "content_hash": f"synthetic:{i}", "mime": None, "status": OK, "indexed_at": now,
                 "text": f"synthetic note {i}" if k == "text" else None}
                for i, k in zip(ids, kinds)])
            session.execute(insert(Vector), [
                {"item_id": int(i), "slot": 0, "kind": CONTENT, "encoder": audio_key if k == "audio" else image_key,
                 "dim": dim, "data": vector_bytes(v), "generation": generation}
                for i, k, v in zip(ids, kinds, vectors)])
        log(f"  inserted {start + count} synthetic items")
    library.store.analyze()  # planner statistics, as an index run leaves them
    library.index(refresh=True)
    return library, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(data_dir), "MMSEARCH_MODEL": "tiny"}
    process = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port),
                                "--threads", str(threads)], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # drained all along: waitress logs "Task queue depth is N" whenever clients outnumber idle threads, and a
    # full, unread pipe (64 KiB) would block the server's event loop on that write
    process.stderr_lines = collections.deque(maxlen=200)  # the tail, those warnings aside
    process.queue_warnings = 0

    def drain() -> None:
        for line in process.stderr:
            if b"Task queue depth" in line:
                process.queue_warnings += 1
            else:
                process.stderr_lines.append(line.decode(errors="replace"))

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            if process.poll() is not None:
                drainer.join(5)
                raise SystemExit("serve exited: " + "".join(process.stderr_lines)[-2000:])
            time.sleep(0.3)
    process.kill()
    raise SystemExit("serve did not start in 180 s")


def query(n: int, salt: str) -> str:
    rng = np.random.default_rng(n)
    return " ".join(rng.choice(WORDS, 3)) + f" {salt}{n}"


def get(connection: http.client.HTTPConnection, text: str, k: int) -> tuple[int, dict | None]:
    connection.request("GET", "/api/search?" + urllib.parse.urlencode({"q": text, "k": k}))
    response = connection.getresponse()
    body = response.read()
    return response.status, (json.loads(body) if response.status == 200 else None)


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {"p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99)),
            "mean_ms": float(array.mean())}


def load_arguments(doc: str | None, clients: int, seconds: float) -> argparse.ArgumentParser:
    """The options every load benchmark takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=clients)
    parser.add_argument("--seconds", type=float, default=seconds, help="length of the load")
    parser.add_argument("--threads", type=int, default=8, help="waitress request threads")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--data-dir", help="keep (and reuse) the synthetic data dir here")
    parser.add_argument("--json", action="store_true")
    return parser


def prepare(args: argparse.Namespace):
    """(log, temporary dir or None, data dir, library, build seconds): the synthetic collection, built or reused."""
    log = (lambda *_: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    temporary = None if args.data_dir else tempfile.TemporaryDirectory(prefix="mmsearch-load-")
    data_dir = Path(args.data_dir or temporary.name)
    log(f"building a {args.items}-item index in {data_dir} ...")
    library, build_seconds = build(data_dir, args.items, log)
    return log, temporary, data_dir, library, build_seconds


def main() -> None:
    parser = load_arguments(__doc__, clients=8, seconds=20.0)
    parser.add_argument("--latency-queries", type=int, default=200)
    args = parser.parse_args()
    log, temporary, data_dir, library, build_seconds = prepare(args)
    ntotal = library.index().ntotal
    log(f"index ready: {ntotal} vectors in {build_seconds:.1f} s; starting the server ...")
    port = free_port()
    server = start_server(data_dir, port, args.threads)
    try:
        # warm-up: the server's and this process's models, the page cache of the database
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in range(10):
            get(connection, query(n, "warm"), args.k)
        warm = threading.Thread(target=lambda: [library.search(SearchRequest(
            parse_query(query(n, "warmup"), allow_files=False), k=args.k)) for n in range(10)])
        warm.start()
        warm.join()

        # 1. sequential latency: API vs in-process on the same queries
        texts = [query(n, "lat") for n in range(args.latency_queries)]
        api_ms, api_errors = [], 0
        for text in texts:
            started = time.perf_counter()
            status, body = get(connection, text, args.k)
            api_ms.append((time.perf_counter() - started) * 1000)
            api_errors += status != 200 or body is None or len(body["results"]) != args.k
        local_ms: list[float] = []

        def in_process() -> None:
            for text in texts:
                started = time.perf_counter()
                response = library.search(SearchRequest(parse_query(text, allow_files=False), k=args.k))
                local_ms.append((time.perf_counter() - started) * 1000)
                assert len(response.results) == args.k

        # In a worker thread, as the server's request threads run it: on a busy machine torch's intra-op
        # pool on the main thread can be 10-50x slower for the tiny model (OpenMP spin-waits).
        runner = threading.Thread(target=in_process)
        runner.start()
        runner.join()
        connection.close()

        # 2. concurrent load
        log(f"load: {args.clients} clients for {args.seconds:.0f} s ...")
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def client(number: int) -> None:
            mine, bad = [], []
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            n = 0
            while time.monotonic() < stop_at:
                text = query(n, f"c{number}x")
                n += 1
                started = time.perf_counter()
                try:
                    status, body = get(conn, text, args.k)
                    if status != 200 or body is None or len(body["results"]) != args.k:
                        bad.append(f"status {status}")
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    bad.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                mine.append((time.perf_counter() - started) * 1000)
            conn.close()
            with lock:
                latencies.extend(mine)
                errors.extend(bad)

        started = time.perf_counter()
        workers = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(10)

    api, local = percentiles(api_ms), percentiles(local_ms)
    document = {
        "items": ntotal, "build_seconds": round(build_seconds, 1), "clients": args.clients,
        "server_threads": args.threads, "seconds": round(elapsed, 1), "k": args.k, "cpus": os.cpu_count(),
        "load": {"requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 1),
                 **{k: round(v, 1) for k, v in percentiles(latencies or [0.0]).items()}, "errors": len(errors),
                 "error_samples": errors[:5]},
        "sequential": {"queries": len(texts), "api": {k: round(v, 2) for k, v in api.items()},
                       "in_process": {k: round(v, 2) for k, v in local.items()}, "api_errors": api_errors,
                       "ratio_p50": round(api["p50_ms"] / local["p50_ms"], 2),
                       "ratio_mean": round(api["mean_ms"] / local["mean_ms"], 2)},
    }
    if args.json:
        print(json.dumps(document))
    else:
        load, seq = document["load"], document["sequential"]
        print(f"index: {ntotal} items (built in {document['build_seconds']} s), {document['cpus']} CPUs, "
              f"server threads {args.threads}")
        print(f"load: {args.clients} clients, {document['seconds']} s: {load['requests']} requests, "
              f"{load['requests_per_s']} req/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
              f"errors {load['errors']}")
        print(f"sequential ({seq['queries']} queries, k={args.k}): API p50 {seq['api']['p50_ms']} ms "
              f"p99 {seq['api']['p99_ms']} ms; in-process Library.search p50 {seq['in_process']['p50_ms']} ms "
              f"p99 {seq['in_process']['p99_ms']} ms; ratio API/in-process p50 {seq['ratio_p50']}, "
              f"mean {seq['ratio_mean']}; errors {seq['api_errors']}")
    if temporary:
        temporary.cleanup()
    if document["load"]["errors"] or document["sequential"]["api_errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
