#!/usr/bin/env python3
"""Classifying a stored collection end to end, as `train-classifier` does it: 100k items' vectors read from
SQL, a trained classifier applied, every item's tag written back, timed per step with peak memory. The
items come in through `mmsearch import` (a generated Parquet file: clustered 512-d vectors, one cluster a
class), so no model is loaded; the classifier is fitted on a labelled sample first (not part of the target).

    python3 benchmarks/tagging.py [--n 100000] [--labelled 2000] [--classes 20] [--fusion concat] [--json]

Target (issue #15): classifying 100k stored vectors in under 10 s on this 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DIM = 512
MODEL = {"name": "ViT-B-32", "pretrained": "openai", "dim": DIM}  # named only: nothing is embedded


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def collection(path: Path, n: int, classes: int, seed: int = 0) -> np.ndarray:
    """A Parquet file of n image items whose vectors lie around one of ``classes`` centres; their classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, DIM)).astype(np.float32)
    truth = rng.integers(0, classes, n)
    vectors = centres[truth] + 1.2 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pa.table({"path": [f"/bench/item-{i:07d}.jpg" for i in range(n)], "modality": ["image"] * n,
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM)})
    table = table.replace_schema_metadata({b"mmsearch_model": json.dumps(MODEL).encode()})
    pq.write_table(table, path)
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--labelled", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--fusion", default="concat", choices=("concat", "mean", "attention"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from mmsearch import tagging
    from mmsearch.labels import Labelled
    from mmsearch.library import Library
    from mmsearch.settings import load_settings
    with tempfile.TemporaryDirectory() as tmp:
        data, file = Path(tmp) / "data", Path(tmp) / "items.parquet"
        truth = collection(file, args.n, args.classes)
        env = {"MMSEARCH_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmsearch", "import", str(file), "--json"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        imported = time.perf_counter() - started
        library = Library(load_settings({"data_dir": str(data)}, env={}), existing=True)
        ids = np.array(sorted(row[0] for row in library.store.index_rows()), np.int64)  # import order = path order
        labels = [f"class-{c}" for c in range(args.classes)]
        sample = np.random.default_rng(1).choice(args.n, args.labelled, replace=False)
        targets = np.zeros((args.labelled, args.classes), bool)
        targets[np.arange(args.labelled), truth[sample]] = True
        from mmsearch.encoders.classifier_training import train
        modality = tagging.candidates(library.store)
        started = time.perf_counter()
        model = train(tagging.views_of(library.store, ids[sample], modality), targets, labels, args.fusion)
        fitted = time.perf_counter() - started
        before = rss_mib()
        started = time.perf_counter()
        report = tagging.apply_model(library, "bench", model, Path(tmp) / "bench")
        applied = time.perf_counter() - started
        tags = library.store.tags.of(ids.tolist())
        predicted = np.array([labels.index(tags[int(i)][0].label) for i in ids])
        figures = {"items": args.n, "classes": args.classes, "fusion": args.fusion, "import_s": round(imported, 2),
                   "fit_s": round(fitted, 2), "classify_s": round(applied, 2),
                   "items_per_s": round(args.n / applied), "tags_written": report.tags,
                   "accuracy": round(float((predicted == truth).mean()), 4), "chance": round(1 / args.classes, 4),
                   "peak_rss_mib": round(rss_mib()), "peak_rss_growth_mib": round(rss_mib() - before)}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.n:,} items imported in {figures['import_s']} s; classifier ({args.fusion}) fitted on "
          f"{args.labelled:,} labelled in {figures['fit_s']} s")
    print(f"classify all: {figures['classify_s']} s ({figures['items_per_s']:,} items/s; SQL read + predict + "
          f"tags written), target < 10 s: {'met' if applied < 10 else 'MISSED'}")
    print(f"accuracy {figures['accuracy']} (chance {figures['chance']}); peak RSS {figures['peak_rss_mib']} MiB "
          f"(+{figures['peak_rss_growth_mib']} MiB while classifying)")


if __name__ == "__main__":
    main()
