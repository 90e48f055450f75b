#!/usr/bin/env python3
"""Filtered vs unfiltered search latency on a synthetic collection, measured side by side.

N items (default 100,000) with clustered, L2-normalised 512-d vectors are written straight into a
fresh SQLite data dir (the model identity recorded as ViT-B-32 so the index has the right shape), and the
planner statistics refreshed as an index run does;
1% of them are 'text' items, the rest images. The same Q query vectors are then searched through
``Searcher.search`` (SQL filter query + FAISS search with an id selector + metadata join) three ways:
no filter, modality = text (1% of items) and path prefix (1% of items). Printed: median and p95 ms
per query, the share of queries that returned all k results, and the ratio filtered / unfiltered.

    python3 benchmarks/filtered_search.py [--n 100000] [--queries 50] [--k 10]
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmsearch.library import Library  # noqa: E402
from mmsearch.settings import load_settings  # noqa: E402
from mmsearch.search.request import Filters, QueryPart, SearchRequest  # noqa: E402
from mmsearch.search.tables import CONTENT, Item, Vector, vector_bytes  # noqa: E402

DIM = 512


def clustered(n: int, rng: np.random.Generator, clusters: int = 200) -> np.ndarray:
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def populate(library: Library, vectors: np.ndarray, selective_every: int) -> None:
    now = dt.datetime(2026, 1, 1)
    identity = {"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "dim": DIM}
    library.store.set_meta("model", identity)
    library.store.set_meta("model_source", {"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    with library.store.session() as session:
        generation = library.store.bump_generation(session)
        items, rows = [], []
        for i, vector in enumerate(vectors, start=1):
            rare = i % selective_every == 0
            folder = "rare" if rare else f"common{i % 50}"
            items.append({"id": i, "path": f"/media/{folder}/{i:07d}.{'txt' if rare else 'jpg'}",
                          "modality": "text" if rare else "image", "size": 1000 + i, "mtime_ns": i,
                          "status": "ok", "indexed_at": now})
            rows.append({"item_id": i, "slot": 0, "kind": CONTENT, "encoder": "ViT-B-32/laion2b_s34b_b79k", "dim": DIM,
                         "data": vector_bytes(vector), "generation": generation})
        session.execute(Item.__table__.insert(), items)
        session.execute(Vector.__table__.insert(), rows)


def timed(library: Library, queries: np.ndarray, k: int, filters: Filters) -> tuple[list[float], float]:
    searcher = library.searcher()
    latencies, full = [], 0
    for query in queries:
        request = SearchRequest([QueryPart("text", "query")], k=k, filters=filters)
        started = time.perf_counter()
        response = searcher.search(request, lambda part: query)
        latencies.append((time.perf_counter() - started) * 1000)
        full += len(response.results) == k
    return latencies, full / len(queries)


def arguments(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    return parser.parse_args()


@contextmanager
def synthetic(n: int, rng: np.random.Generator, selective_every: int) -> Iterator[Library]:
    """A temporary data dir holding n clustered vectors, with planner statistics refreshed as an index run
    leaves them and the vector index built; says how long that took."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        library = Library(load_settings({"data_dir": tmp, "model": "ViT-B-32"}, env={}))
        populate(library, clustered(n, rng), selective_every)
        library.store.analyze()
        library.index()
        print(f"built {n} items + index in {time.perf_counter() - started:.1f} s")
        yield library


def main() -> None:
    args = arguments(__doc__)
    rng = np.random.default_rng(0)
    with synthetic(args.n, rng, selective_every=100) as library:
        queries = clustered(args.queries, rng)
        # the query parts are vectors handed in directly: the item part only satisfies the request shape
        cases = {"unfiltered": Filters(), "modality=text (1%)": Filters(modalities=["text"]),
                 "path prefix (1%)": Filters(path_prefix="/media/rare/")}
        timed(library, queries[:3], args.k, Filters())  # warm-up
        results = {name: timed(library, queries, args.k, filters) for name, filters in cases.items()}
        base = np.median(results["unfiltered"][0])
        print(f"{'query':<22}{'median ms':>10}{'p95 ms':>9}{'full k':>8}{'ratio':>8}")
        for name, (latencies, full) in results.items():
            median = np.median(latencies)
            print(f"{name:<22}{median:>10.1f}{np.percentile(latencies, 95):>9.1f}{full:>8.0%}{median / base:>8.2f}")


if __name__ == "__main__":
    main()
