#!/usr/bin/env python3
"""``index --engine ray`` against the local engine, side by side on the same photos (issue #16).

N photo-like JPEGs (index_throughput's generator) are written once. For each model (``pretrained="random"``,
CPU: speed does not depend on the weights) and each round, both engines index the folder into a fresh data dir
through ``Library.run_index`` (scan, plan, decode, embed, commit, vector index), alternating which goes first.
Before the clock: this process's towers are loaded and a local Ray is started (``ray.init``), as a cluster
would be up before a run. On the clock for Ray: building the dataset, the model actors loading their towers,
decoding in Ray tasks, embedding in the actors, streaming the batches back, committing here. The best round
of each engine is kept. Then the two data dirs are compared: the same items, and the largest difference of
any vector (the acceptance bound is 1e-5).

On one 2-core machine Ray cannot be faster than the local engine (both use the same two cores; Ray adds
pickling, an object store and an actor's start-up): the figure says what it costs, not what a cluster gains.

    python3 benchmarks/ray_index.py [--n 256] [--models tiny,ViT-B-32] [--batch-size 32] [--repeat 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_throughput import make_images  # noqa: E402
from mmsearch.library import Library  # noqa: E402
from mmsearch.settings import load_settings  # noqa: E402


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def vectors(data_dir: Path) -> dict[tuple, np.ndarray]:
    with sqlite3.connect(data_dir / "mmsearch.db") as db:
        return {(r[0], r[1], r[2]): np.frombuffer(r[3], "<f4") for r in db.execute(
            "SELECT i.path, v.slot, v.kind, v.data FROM vectors v JOIN items i ON i.id = v.item_id")}


def run(engine: str, model: str, folder: Path, data_dir: Path, n: int, batch_size: int) -> float:
    """Files/s of one first-time index of ``folder`` into ``data_dir`` with ``engine``."""
    flags = {"data_dir": str(data_dir), "model": model, "pretrained": "random", "device": "cpu",
             "batch_size": batch_size}
    library = Library(load_settings(flags, env={}))
    library.encoder()  # this process's towers: loaded off the clock for both engines
    started = time.perf_counter()
    report = library.run_index([str(folder)], engine=engine).summary()
    seconds = time.perf_counter() - started
    library.store.engine.dispose()
    if report["added"] != n or report["failed"]:
        raise SystemExit(f"{engine}/{model}: expected {n} added and none failed, got {report}")
    return n / seconds


def measure(model: str, folder: Path, n: int, batch_size: int, repeat: int, work: Path) -> dict:
    best: dict[str, float] = {"local": 0.0, "ray": 0.0}
    dirs: dict[str, Path] = {}
    for round_ in range(repeat):
        for engine in (("local", "ray") if round_ % 2 == 0 else ("ray", "local")):
            dirs[engine] = work / f"{model}-{engine}-{round_}"
            rate = run(engine, model, folder, dirs[engine], n, batch_size)
            _log(f"{model} {engine} round {round_ + 1}: {rate:.1f} files/s")
            best[engine] = max(best[engine], rate)
    local, ray = vectors(dirs["local"]), vectors(dirs["ray"])
    if local.keys() != ray.keys():
        raise SystemExit(f"{model}: the engines stored different vectors ({len(local)} vs {len(ray)})")
    diff = max(float(np.abs(local[k] - ray[k]).max()) for k in local)
    return {"model": model, "n": n, "local_files_per_s": best["local"], "ray_files_per_s": best["ray"],
            "ratio": best["ray"] / best["local"], "max_vector_difference": diff}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="number of 640x480 JPEGs (default 256)")
    parser.add_argument("--models", default="tiny,ViT-B-32", help="comma-separated (default tiny,ViT-B-32)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2, help="rounds, engines alternating first (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)

    import ray
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-ray-") as tmp:
        _log(f"writing {args.n} JPEGs ...")
        folder = Path(tmp) / "photos"
        make_images(folder, args.n, (640, 480))
        rows = [measure(m.strip(), folder, args.n, args.batch_size, max(1, args.repeat), Path(tmp))
                for m in args.models.split(",") if m.strip()]
    ray.shutdown()
    context = {"cpus": os.cpu_count(), "ray_cpus": cpus, "batch_size": args.batch_size, "repeat": args.repeat,
               "load_average": os.getloadavg()[0]}
    if args.json:
        print(json.dumps({**context, "rows": rows}))
        return 0
    print(f"{args.n} JPEGs 640x480, batch {args.batch_size}, {context['cpus']} CPUs (Ray: {cpus}), best of "
          f"{args.repeat}, load average at the end {context['load_average']:.1f}")
    print(f"{'model':<10}{'local files/s':>15}{'ray files/s':>13}{'ray/local':>11}{'max |Δ| vector':>16}")
    for row in rows:
        print(f"{row['model']:<10}{row['local_files_per_s']:>15.1f}{row['ray_files_per_s']:>13.1f}"
              f"{row['ratio']:>11.2f}{row['max_vector_difference']:>16.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
