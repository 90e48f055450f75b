"""search_scaling.py --grow: a served data dir grows past ann_threshold while clients search.

The data dir (``size`` items, one image part) is rebuilt exact, then served by ``manage.py serve`` in a
process of its own with ann_threshold = size + count / 2. Four client threads post vector queries (keep-alive
connections) from before the import to a few seconds after the server has swapped in the rebuilt part;
``manage.py import`` adds ``count`` items from a Parquet file in a third process. The server catches up its
exact part on the new items at the next request (under its write lock), sees that auto now wants IVF, and
rebuilds beside it in a background thread while the exact part keeps answering; /api/stats says when the
IVF part is in. Phases: before (the import not started), import (the import process running), rebuild (from
the import's end until the IVF part is served), after. Per phase: requests, errors, p50 and p99 ms.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


def _parquet(path: str, vectors: np.ndarray, first: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({"path": [f"/media/grown/{first + i:08d}.jpg" for i in range(len(vectors))],
                      "modality": ["image"] * len(vectors),
                      "vector": pa.array(list(vectors), type=pa.list_(pa.float32()))})
    pq.write_table(table, path)


def grow(folder: str, size: int, count: int, collection: Callable, dim: int) -> dict:
    from mmsearch.library import Library
    from mmsearch.settings import load_settings
    threshold = size + count // 2
    env = {**os.environ, "MMSEARCH_DATA_DIR": folder, "MMSEARCH_INDEX_TYPE": "auto",
           "MMSEARCH_ANN_THRESHOLD": str(threshold), "MMSEARCH_INDEX_CODES": "Flat",
           "MMSEARCH_MODEL": "ViT-B-32", "MMSEARCH_PRETRAINED": "random"}
    Library(load_settings({"data_dir": folder, "index_type": "auto", "ann_threshold": threshold})).cache.rebuild()
    extra, queries = collection(count, 64, max(10, count // 1000), seed=1)
    parquet = os.path.join(tempfile.mkdtemp(prefix="mmsearch-grow-"), "more.parquet")
    _parquet(parquet, extra, size + 1)
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port), "--threads", "8"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                _get(port, "/api/health")
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"the server stopped: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
        bodies = [json.dumps({"parts": [{"kind": "vector", "value": q.tolist()}], "k": 10}) for q in queries]
        records: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
        stop = threading.Event()

        def client(seed: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            n = seed
            while not stop.is_set():
                body, sent = bodies[n % len(bodies)], time.monotonic()
                try:
                    connection.request("POST", "/api/search", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    status, connection = 0, http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                records.append((sent, time.monotonic() - sent, status))
                n += 4
        _get(port, "/api/stats")  # opens the index before the clock
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(5)
        marks = {"import": time.monotonic()}
        imported = subprocess.run([sys.executable, str(ROOT / "manage.py"), "import", parquet], env=env,
                                  capture_output=True, text=True)
        marks["rebuild"] = time.monotonic()
        part = {}
        for _ in range(1200):
            part = _get(port, "/api/stats")["index"]["by_modality"]["image"]
            if part["type"].startswith("IVF") and part["ntotal"] == size + count:
                break
            time.sleep(0.5)
        marks["after"] = time.monotonic()
        time.sleep(5)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        server.terminate()
        server.wait(30)
    phases, starts = {}, [("before", 0.0), ("import", marks["import"]), ("rebuild", marks["rebuild"]),
                          ("after", marks["after"])]
    for n, (name, begun) in enumerate(starts):
        end = starts[n + 1][1] if n + 1 < len(starts) else float("inf")
        rows = [(s, status) for sent, s, status in records if begun <= sent < end]
        times = np.array([s for s, _ in rows]) * 1000
        phases[name] = {"requests": len(rows), "errors": sum(status != 200 for _, status in rows),
                        "p50_ms": round(float(np.percentile(times, 50)), 1) if len(rows) else None,
                        "p99_ms": round(float(np.percentile(times, 99)), 1) if len(rows) else None,
                        "seconds": round(min(end, marks["after"] + 5) - max(begun, marks["import"] - 5), 1)}
    return {"size": size, "imported": count, "ann_threshold": threshold, "import_rc": imported.returncode,
            "import_s": round(marks["rebuild"] - marks["import"], 1),
            "rebuild_s": round(marks["after"] - marks["rebuild"], 1), "served_part": part, "phases": phases}
