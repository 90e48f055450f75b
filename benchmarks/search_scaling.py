#!/usr/bin/env python3
"""Search at 10k–1M items, per index type, side by side in one run (issue #13).

Data: clustered L2-normalised 512-d vectors: ``--clusters`` (default n/1000) clusters of very uneven sizes
(Zipf-like, exponent 0.8), each point its cluster's centre plus a point of the cluster's own 16-d subspace
plus isotropic noise; queries drawn the same way, further off the centres (1.3× the subspace spread, twice
the noise). Every item is an image with one content vector, written straight into SQL (10k a transaction,
filtered_search.populate's way), so each size's data dir holds one index part.

Per size, each index type builds the part from SQL (``IndexCache.rebuild``: read, train on a sample, add)
and is measured with ``--queries`` queries (40 for exact search above 100k items), each path after 5
untimed ones, the API's app holding the index in memory as the library does (index_mmap off): build seconds; RAM bytes per item (RSS growth of reading the
index file, the way a server opens it) and disk bytes per item (the index file; the SQLite file is printed
once per size); recall@10 of the items our search returns against exact search over the raw vectors;
queries/s one at a time through faiss called directly on the same index (``index.search`` with the part's
nprobe), through our item search (``Partitioned.search``), through ``Library.search`` with a vector query
part (request checks, fusion, the SQL read of the results) and through the JSON API in-process (Flask's test
client posting the vector: JSON in and out, the app's generation check); and batched (all queries in one
call, faiss and ours). Types: ``Flat`` (exact; skipped above --exact-max, where each query reads the whole
collection) and ``auto`` with each of --codes. The targets are printed beside the figures.

``--grow N`` then serves the largest data dir (``manage.py serve``, a process of its own) with ann_threshold
set between its size and size + N, so that importing N more items (``manage.py import`` of a Parquet file,
another process) moves the part from exact to IVF: 4 client threads post vector queries throughout, and
the latency and errors before, while the server rebuilds the part in the background, and after are printed.

    python3 benchmarks/search_scaling.py [--sizes 10000,100000,1000000] [--queries 200] [--codes Flat,SQ8]
                                         [--grow 10000] [--gpu] [--json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from filtered_search import DIM  # noqa: E402
from scaling_grow import grow  # noqa: E402
from mmsearch.library import Library  # noqa: E402
from mmsearch.search.request import QueryPart, SearchRequest  # noqa: E402
from mmsearch.search.tables import CONTENT, Item, Vector, vector_bytes  # noqa: E402
from mmsearch.settings import load_settings  # noqa: E402

NOW = dt.datetime(2026, 1, 1)
MODEL = {"name": "ViT-B-32", "pretrained": "random", "dim": DIM}  # served without a download


def collection(n: int, queries: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    share = 1.0 / np.arange(1, clusters + 1) ** 0.8
    share /= share.sum()
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    bases = rng.normal(size=(clusters, 16, DIM)).astype(np.float32) * 0.35

    def draw(count: int, spread: float, noise: float) -> np.ndarray:
        out = np.empty((count, DIM), np.float32)
        for start in range(0, count, 20_000):
            label = rng.choice(clusters, size=min(20_000, count - start), p=share)
            z = rng.normal(size=(len(label), 16)).astype(np.float32) * spread
            rows = centres[label] + np.einsum("nk,nkd->nd", z, bases[label]) \
                + noise * rng.normal(size=(len(label), DIM)).astype(np.float32)
            out[start:start + len(label)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return out
    return draw(n, 1.0, 0.15), draw(queries, 1.3, 0.3)


def populate(library: Library, vectors: np.ndarray, first: int = 1) -> None:
    library.store.set_meta("model", MODEL)
    library.store.set_meta("model_source", {"name": MODEL["name"], "pretrained": MODEL["pretrained"]})
    key = f"{MODEL['name']}/{MODEL['pretrained']}"
    for start in range(0, len(vectors), 10_000):
        with library.store.session() as session:
            generation = library.store.bump_generation(session)
            ids = range(first + start, first + min(start + 10_000, len(vectors)))
            session.execute(Item.__table__.insert(), [
                {"id": i, "path": f"/media/{i // 1000:04d}/{i:08d}.jpg", "modality": "image", "size": 1000 + i,
                 "mtime_ns": i, "status": "ok", "indexed_at": NOW} for i in ids])
            session.execute(Vector.__table__.insert(), [
                {"item_id": i, "slot": 0, "kind": CONTENT, "encoder": key, "dim": DIM,
                 "data": vector_bytes(vectors[i - first]), "generation": generation} for i in ids])
    library.store.analyze()


# RSS growth of reading an index file in a fresh process, as a server opens it
LOAD = """import os, sys, faiss
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss(); index = faiss.read_index(sys.argv[1]); print(rss() - before)"""


def per_second(calls: list, repeat: int = 1) -> float:
    for call in calls[:5]:  # warm-up: first calls pay one-off costs (a session's first statement, caches)
        call()
    started = time.perf_counter()
    for _ in range(repeat):
        for call in calls:
            call()
    return len(calls) * repeat / (time.perf_counter() - started)


def measure(folder: str, settings: dict, queries: np.ndarray, truth: np.ndarray, use_gpu: bool) -> dict:
    # the API's app opens the index itself: in memory, as the in-process library has it after its rebuild
    # (mapped, its first queries would fault the codes in and time the disk instead of the API)
    library = Library(load_settings({"data_dir": folder, "index_mmap": False, **settings}))
    started = time.perf_counter()
    library.cache.rebuild()
    build = time.perf_counter() - started
    index = library.index()
    part = index.parts["image"]
    path = library.cache.file("image")
    ram = int(subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True,
                             check=True).stdout)
    items = len(part.item_ids())
    from mmsearch.web import create_app
    client = create_app({"MMSEARCH": library.settings, "TESTING": True}).test_client()
    k = 10
    found = []
    for query in queries:
        response = library.search(SearchRequest([QueryPart("vector", query.tolist())], k=k))
        found.append([r.id - 1 for r in response.results])
    recall = float(np.mean([len(set(got) & set(want)) / k for got, want in zip(found, truth)]))
    ivf = part.ivf
    params = faiss.SearchParametersIVF(nprobe=min(part.nprobe, ivf.nlist)) if ivf is not None else None
    direct = part._searcher() if use_gpu and ivf is None else part.cpu
    bodies = [json.dumps({"parts": [{"kind": "vector", "value": q.tolist()}], "k": k}) for q in queries]
    rows = [q[None] for q in queries]
    row = {
        "type": part.state.factory, "build_s": round(build, 2), "items": items,
        "ram_bytes_per_item": round(ram / items, 1), "disk_bytes_per_item": round(path.stat().st_size / items, 1),
        "recall_at_10": round(recall, 4),
        "faiss_qps": per_second([lambda q=q: direct.search(q, k, params=params) for q in rows]),
        "item_search_qps": per_second([lambda q=q: index.search(q, k + 1) for q in rows]),
        "library_qps": per_second([lambda q=q: library.search(SearchRequest([QueryPart("vector", q[0].tolist())], k=k))
                                   for q in rows]),
        "api_qps": per_second([lambda b=b: client.post("/api/search", data=b, content_type="application/json")
                               for b in bodies]),
        "faiss_batched_qps": per_second([lambda: direct.search(queries, k, params=params)]) * len(queries),
        "item_search_batched_qps": per_second([lambda: index.search(queries, k + 1)]) * len(queries),
    }
    return {key: round(value, 1) if isinstance(value, float) and key.endswith("qps") else value
            for key, value in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--codes", default="Flat,SQ8", help="index_codes to measure with index_type auto")
    parser.add_argument("--exact-max", type=int, default=1_000_000, help="largest size Flat is measured at")
    parser.add_argument("--clusters", type=int, default=0, help="0: one per 1,000 items (at least 10)")
    parser.add_argument("--grow", type=int, default=0, help="import this many more into the largest size, served")
    parser.add_argument("--gpu", action="store_true", help="search exact indexes on the GPU when faiss has one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(f"faiss {faiss.__version__}, GPUs seen: {faiss.get_num_gpus()}, threads {faiss.omp_get_max_threads()}",
          file=sys.stderr)
    report = {}
    with tempfile.TemporaryDirectory(prefix="mmsearch-scaling-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            vectors, queries = collection(n, args.queries, args.clusters or max(10, n // 1000))
            exact = faiss.IndexFlatIP(DIM)
            exact.add(vectors)
            truth = exact.search(queries, 10)[1]
            del exact
            folder = os.path.join(tmp, str(n))
            started = time.perf_counter()
            populate(Library(load_settings({"data_dir": folder})), vectors)
            populated = time.perf_counter() - started
            sql = os.path.getsize(os.path.join(folder, "mmsearch.db"))
            rows = {}
            types = ([("Flat", {"index_type": "Flat"})] if n <= args.exact_max else []) + \
                [(f"auto/{codes}", {"index_type": "auto", "index_codes": codes}) for codes in args.codes.split(",")]
            for name, settings in types:
                few = settings["index_type"] == "Flat" and n > 100_000  # ~3 q/s at 1M: 40 queries are enough
                rows[name] = measure(folder, settings, queries[:40] if few else queries, truth[:40] if few else truth,
                                     args.gpu)
                print(f"{n}: {name} done", file=sys.stderr)
            report[n] = {"sql_bytes_per_item": round(sql / n, 1), "populate_s": round(populated, 1),
                         "types": rows}
            del vectors
        if args.grow:
            largest = max(report)
            report["grow"] = grow(os.path.join(tmp, str(largest)), largest, args.grow, collection, DIM)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print_report(report)


def print_report(report: dict) -> None:
    head = ("type", "build s", "RAM B/item", "disk B/item", "recall@10", "faiss q/s", "ours q/s", "ours/faiss",
            "Library q/s", "API q/s", "API/Library", "× exact", "faiss batch", "ours batch")
    for n, size in report.items():
        if n == "grow":
            continue
        print(f"\n{n:,} items (SQLite {size['sql_bytes_per_item']} B/item, written in {size['populate_s']} s)")
        print(" | ".join(head))
        exact = size["types"].get("Flat", {}).get("library_qps")
        for name, row in size["types"].items():
            print(" | ".join(str(v) for v in (
                f"{name} ({row['type']})", row["build_s"], row["ram_bytes_per_item"], row["disk_bytes_per_item"],
                row["recall_at_10"], row["faiss_qps"], row["item_search_qps"],
                f"{row['faiss_qps'] / row['item_search_qps']:.2f}", row["library_qps"], row["api_qps"],
                f"{row['library_qps'] / row['api_qps']:.2f}",
                f"{row['library_qps'] / exact:.0f}" if exact else "-", row["faiss_batched_qps"],
                row["item_search_batched_qps"])))
    if "grow" in report:
        print("\n" + json.dumps(report["grow"]))
    print("\ntargets at 1M, defaults (auto): recall@10 ≥ 0.95; ≥ 50× exact Flat's single-query q/s; ours ≤ 1.2× "
          "faiss (ours/faiss: faiss q/s over ours); API latency ≤ 2× in-process (API/Library); RAM ≤ 1.3 KB/item "
          "with SQ8 or SQfp16")


if __name__ == "__main__":
    main()
