#!/usr/bin/env python3
"""Late fusion latency and index memory, measured side by side on one synthetic collection.

N items (default 100,000; 80% images, 20% notes) with clustered 512-d vectors go straight into a fresh
SQLite data dir (see filtered_search.py). The same Q pairs of query vectors are searched through
``Searcher.search`` as: early fusion (one search of the fused index), RRF over the fused index (one list
per part), RRF within each modality's part of the index (one list per part and modality), and both RRF
forms with the second part negative (every candidate's exact global rank via a range search). Printed:
median and p95 ms per query and the ratio to early fusion; then the bytes of the index files.

    python3 benchmarks/late_fusion.py [--n 100000] [--queries 50] [--k 10]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from filtered_search import DIM, arguments, clustered, synthetic  # noqa: E402
from mmsearch.library import Library  # noqa: E402
from mmsearch.search.request import QueryPart, SearchRequest  # noqa: E402
from mmsearch.modalities import MODALITIES  # noqa: E402


def timed(library: Library, pairs: np.ndarray, k: int, weights: tuple[float, float] = (1.0, 1.0),
          **options) -> list[float]:
    searcher = library.searcher()
    latencies = []
    for first, second in pairs:
        request = SearchRequest([QueryPart("text", "a", weights[0]), QueryPart("text", "b", weights[1])],
                                k=k, **options)
        vectors = {"a": first, "b": second}
        started = time.perf_counter()
        response = searcher.search(request, lambda part: vectors[part.value])
        latencies.append((time.perf_counter() - started) * 1000)
        assert len(response.results) == k
    return latencies


def main() -> None:
    args = arguments(__doc__)
    rng = np.random.default_rng(0)
    with synthetic(args.n, rng, selective_every=5) as library:
        pairs = clustered(2 * args.queries, rng).reshape(args.queries, 2, -1)
        cases = {"early (fused)": {"fusion": "early"},
                 "rrf, fused index": {"fusion": "rrf", "index": "fused"},
                 "rrf, modality indexes": {"fusion": "rrf", "index": "modality"},
                 "rrf fused, b negative": {"fusion": "rrf", "index": "fused", "weights": (1.0, -1.0)},
                 "rrf modality, b neg.": {"fusion": "rrf", "index": "modality", "weights": (1.0, -1.0)}}
        timed(library, pairs[:3], args.k, fusion="rrf", index="modality", weights=(1.0, -1.0))  # warm-up
        results = {name: timed(library, pairs, args.k, **options) for name, options in cases.items()}
        base = np.median(results["early (fused)"])
        print(f"{'query (2 parts)':<24}{'median ms':>10}{'p95 ms':>9}{'ratio':>8}")
        for name, latencies in results.items():
            median = np.median(latencies)
            print(f"{name:<24}{median:>10.1f}{np.percentile(latencies, 95):>9.1f}{median / base:>8.2f}")
        files = sum(library.cache.file(space).stat().st_size for space in MODALITIES)
        print(f"index files (one per modality, each vector once): {files / 2**20:.0f} MiB "
              f"for {args.n} × {DIM} float32 = {args.n * DIM * 4 / 2**20:.0f} MiB of vectors")

if __name__ == "__main__":
    main()
