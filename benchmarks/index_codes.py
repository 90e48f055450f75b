#!/usr/bin/env python3
"""Flat against smaller codes (SQfp16, SQ8), side by side in one run: bytes a vector, recall@10 and score
error against exact search, and single-query latency, on clustered L2-normalised 512-d vectors (200
clusters) with queries off the centres. The codes are what `index_type` puts in the FAISS cache; SQL keeps
float32 whatever the index holds.

    python3 benchmarks/index_codes.py [--n 100000] [--scan 350000] [--queries 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

DIM = 512
TYPES = ("Flat", "SQfp16", "SQ8")


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors for recall and score error")
    parser.add_argument("--scan", type=int, default=350_000, help="vectors for the latency of one query")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    size = max(args.n, args.scan)
    base = unit(centres[rng.integers(0, 200, size)] + 0.5 * rng.normal(size=(size, DIM)).astype(np.float32))
    queries = unit(centres[rng.integers(0, 200, args.queries)]
                   + 0.7 * rng.normal(size=(args.queries, DIM)).astype(np.float32))
    exact = faiss.IndexFlatIP(DIM)
    exact.add(base[:args.n])
    _, truth = exact.search(queries, 10)
    rows = {}
    for kind in TYPES:
        index = faiss.index_factory(DIM, kind, faiss.METRIC_INNER_PRODUCT)
        index.train(base[:args.n])
        index.add(base[:args.n])
        scores, ids = index.search(queries, 10)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
        error = np.abs(scores[:, 0] - np.einsum("ij,ij->i", base[ids[:, 0]], queries))
        scan = faiss.index_factory(DIM, kind, faiss.METRIC_INNER_PRODUCT)
        scan.train(base[:args.n])
        scan.add(base[:args.scan])
        scan.search(queries[:2], 10)
        times = []
        for query in queries[:50]:
            started = time.perf_counter()
            scan.search(query[None], 30)
            times.append(time.perf_counter() - started)
        rows[kind] = {"bytes_per_vector": index.sa_code_size(), "recall_at_10": recall,
                      "score_error_mean": float(error.mean()), "score_error_max": float(error.max()),
                      "query_ms": float(np.median(times) * 1000)}
    print(f"{'type':<8}{'bytes/vector':>13}{'recall@10':>11}{'err mean':>10}{'err max':>10}"
          f"{f'ms @ {args.scan}':>14}{'vs Flat':>9}")
    for kind, row in rows.items():
        print(f"{kind:<8}{row['bytes_per_vector']:>13}{row['recall_at_10']:>11.4f}{row['score_error_mean']:>10.1e}"
              f"{row['score_error_max']:>10.1e}{row['query_ms']:>14.2f}{row['query_ms'] / rows['Flat']['query_ms']:>9.2f}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
