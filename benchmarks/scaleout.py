#!/usr/bin/env python3
"""The same collection on each store the engine runs on, side by side in one run (issue #16): SQLite + FAISS,
PostgreSQL + FAISS and SQLite + milvus-lite (and SQLite + FAISS Flat, the exact baseline).

Data: search_scaling.collection's clustered 512-d vectors (imported from it), one image item each, written to
one Parquet file (scaling_grow's writer) and loaded into each fresh data dir by the bulk path, ``mmsearch
import FILE`` as its own process: import s is that whole command (its start-up, the rows checked and written
to SQL, then the vector index built from SQL and saved), SQL s the share its JSON reports for the rows.
Then, in this process, the index is built again from SQL (index build s: ``IndexCache.rebuild``, so held in
memory, index_mmap off) and a Library on that data dir answers ``--queries`` single vector queries through
``Library.search`` (request checks, the vector search, the SQL read of the 10 results), each after 5 untimed
ones: queries/s, and recall@10 of the items it returns against exact numpy top-10 over the raw vectors.
Filtered searches: a path glob that keeps 10 % of the items (``*0.jpg``) and one that keeps 1 % (``*00.jpg``),
evaluated in SQL and pushed into the vector search (FAISS: an id selector; Milvus: an ``item_id in [...]``
expression): median and p95 ms, and recall@10 against exact top-10 among the items the filter keeps. The
index type each store chose is printed (index_type auto: IVF above ann_threshold vectors for FAISS; Milvus:
FLAT). FAISS Flat is measured on the SQLite data dir, its part rebuilt as Flat.

PostgreSQL: a throwaway server started as the tests start theirs (tests/postgres.py), or ``--pg-url``.

    python3 benchmarks/scaleout.py [--items 100000] [--queries 200] [--filtered-queries 50]
                                   [--backends sqlite+faiss,postgresql+faiss,sqlite+milvus-lite] [--no-flat]
                                   [--pg-url URL] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scaling_grow import _parquet  # noqa: E402
from search_scaling import collection, per_second  # noqa: E402
from mmsearch.library import Library  # noqa: E402
from mmsearch.search.request import Filters, QueryPart, SearchRequest  # noqa: E402
from mmsearch.settings import load_settings  # noqa: E402

K = 10
MODEL = {"model": "ViT-B-32", "pretrained": "random"}  # the vectors' shape; no weights are loaded
FILTERS = {"10 %": ("*0.jpg", 10), "1 %": ("*00.jpg", 100)}  # globs on the numbers _parquet names paths by (1, 2, …)
BACKENDS = ("sqlite+faiss", "postgresql+faiss", "sqlite+milvus-lite")


def exact_top(vectors: np.ndarray, queries: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of each query's exact top-K (numpy), among the rows ``keep`` marks."""
    scores = queries @ vectors.T
    if keep is not None:
        scores[:, ~keep] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1)


def import_into(settings: dict[str, str], parquet: str) -> dict[str, float]:
    env = {**os.environ, **{f"MMSEARCH_{name.upper()}": value for name, value in settings.items()}}
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "mmsearch", "import", parquet, "--json"], env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"import failed: {run.stdout[-1000:]} {run.stderr[-2000:]}")
    return {"import_s": round(wall, 1), "sql_s": round(json.loads(run.stdout)["seconds"], 1)}


def build(library: Library) -> dict[str, float]:
    """The vector index built anew from SQL in this process (IndexCache.rebuild), and so held in memory."""
    started = time.perf_counter()
    library.cache.rebuild()
    return {"build_s": round(time.perf_counter() - started, 1)}


def measure(library: Library, vectors: np.ndarray, queries: np.ndarray, filtered: int) -> dict:
    def search(query: np.ndarray, glob: str | None = None) -> list[int]:
        request = SearchRequest([QueryPart("vector", query.tolist())], k=K, filters=Filters(path_glob=glob))
        return [int(Path(hit.item.path).stem) - 1 for hit in library.search(request).results]  # row numbers

    def recall(found: list[list[int]], truth: np.ndarray) -> float:
        return round(float(np.mean([len(set(got) & set(want.tolist())) / K for got, want in zip(found, truth)])), 4)

    row = {"type": library.cache.stats()["by_modality"]["image"]["type"],
           "recall_at_10": recall([search(q) for q in queries], exact_top(vectors, queries)),
           "qps": round(per_second([lambda q=q: search(q) for q in queries]), 1)}
    numbers = np.arange(1, len(vectors) + 1)
    for name, (glob, every) in FILTERS.items():
        keep = numbers % every == 0
        few = queries[:filtered]
        for query in few[:5]:  # warm-up, as per_second does
            search(query, glob)
        times, found = [], []
        for query in few:
            started = time.perf_counter()
            found.append(search(query, glob))
            times.append(1000 * (time.perf_counter() - started))
        row[name] = {"kept": int(keep.sum()), "median_ms": round(float(np.median(times)), 1),
                     "p95_ms": round(float(np.percentile(times, 95)), 1),
                     "recall_at_10": recall(found, exact_top(vectors, few, keep))}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--filtered-queries", type=int, default=50)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--no-flat", action="store_true", help="leave out SQLite + FAISS Flat")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database to use instead of a throwaway server")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = args.backends.split(",")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(f"unknown backend(s) {', '.join(sorted(unknown))}: choose from {', '.join(BACKENDS)}")
    vectors, queries = collection(args.items, args.queries, max(10, args.items // 1000))
    report: dict = {"items": args.items, "queries": args.queries, "rows": {}}
    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-scaleout-"))
    server = None
    try:
        parquet = str(tmp / "items.parquet")
        _parquet(parquet, vectors, 1)
        for backend in backends:
            settings = {"data_dir": str(tmp / backend), **MODEL}
            if backend == "postgresql+faiss":
                if args.pg_url:
                    settings["db_url"] = args.pg_url
                else:
                    from tests.postgres import Server
                    # its own folder, as tests/conftest.py makes it: the postgres user must reach it
                    server = server or Server(Path(tempfile.mkdtemp(prefix="mmsearch-pg-"))).start()
                    settings["db_url"] = server.new_database()
            if backend == "sqlite+milvus-lite":
                settings["vector_store"] = "milvus:vectors.db"
            imported = import_into(settings, parquet)
            rows = [(backend, {}, imported)]
            if backend == "sqlite+faiss" and not args.no_flat:
                rows.append(("sqlite+faiss Flat", {"index_type": "Flat"}, {"import_s": None, "sql_s": None}))
            for name, more, row in rows:
                library = Library(load_settings({**settings, **more, "index_mmap": False}, env={}))
                report["rows"][name] = {**row, **build(library), **measure(library, vectors, queries,
                                                                            args.filtered_queries)}
                print(f"{name} done: {report['rows'][name]}", file=sys.stderr)
                del library
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print_report(report)


def print_report(report: dict) -> None:
    print(f"\n{report['items']:,} items, {report['queries']} single queries, k = {K}")
    print(" | ".join(("store", "index type", "import s (SQL s)", "index build s", "q/s", "recall@10",
                      *(f"filter {name}: median / p95 ms, recall" for name in FILTERS))))
    for backend, row in report["rows"].items():
        loaded = "-" if row["import_s"] is None else f"{row['import_s']} ({row['sql_s']})"
        print(" | ".join(str(v) for v in (
            backend, row["type"], loaded, row["build_s"], row["qps"], row["recall_at_10"],
            *(f"{row[name]['median_ms']} / {row[name]['p95_ms']}, {row[name]['recall_at_10']}" for name in FILTERS))))


if __name__ == "__main__":
    main()
