#!/usr/bin/env python3
"""Classifying stored vectors with a trained classifier: training time, then the time and memory to classify
every item, for each fusion side by side.

N items (default 100,000: 60% images, 20% sounds, 20% notes, half the images and sounds with a caption)
get clustered, L2-normalised 512-d view vectors around L label centres (each modality offset from the
others, as the shared space's modality gap does), in the (N, 4, D) ``Views`` layout the classifiers read
(819 MB of float32 at the defaults). Each fusion is trained on the first T items (default 5,000), then
``predict_proba`` runs over all N. Printed per fusion: training seconds, held-out accuracy on the last 10%
(a sanity check, not a benchmark of accuracy), classification seconds and items/s, and the peak
resident memory the classification added on top of the views (VmHWM, reset before each run; Linux;
memory the allocator already held from an earlier run is not counted again). On a machine
whose cores are busy with other work, ``--threads 1`` is faster than torch's default: its threads wait
for each other.

    python3 benchmarks/classify.py [--n 100000] [--train 5000] [--dim 512] [--labels 20] [--threads 0]
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmsearch.encoders.classifier_training import train  # noqa: E402
from mmsearch.encoders.classifiers import FUSIONS  # noqa: E402
from mmsearch.encoders.views import CAPTION, VIEWS, Views, subset  # noqa: E402


def synthetic(n: int, dim: int, labels: int, rng: np.random.Generator, chunk: int = 20_000
              ) -> tuple[Views, np.ndarray]:
    """(views, label per item), built in chunks so that no float64 copy of the whole set exists."""
    centres = rng.normal(size=(labels, dim)).astype(np.float32)
    gaps = 1.5 * rng.normal(size=(len(VIEWS), dim)).astype(np.float32)  # one offset per view: the modality gap
    classes = rng.integers(0, labels, n)
    content = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])  # image, audio, text: VIEWS' first three slots
    vectors = np.zeros((n, len(VIEWS), dim), np.float32)
    mask = np.zeros((n, len(VIEWS)), bool)
    mask[np.arange(n), content] = True
    mask[:, VIEWS.index(CAPTION)] = (content != VIEWS.index("text")) & (rng.random(n) < 0.5)
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        block = centres[classes[rows], None, :] + gaps[None] + \
            4.0 * rng.standard_normal((len(classes[rows]), len(VIEWS), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=2, keepdims=True)
        vectors[rows] = np.where(mask[rows, :, None], block, np.float32(0))
    return Views(vectors, mask), classes


def _status(field: str) -> int | None:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM), or None where there is no /proc."""
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: writing 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--train", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS iterations per training (brief)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    views, classes = synthetic(args.n, args.dim, args.labels, rng)
    print(f"{args.n} items × {len(VIEWS)} views × {args.dim}-d: {views.vectors.nbytes / 2**20:.0f} MiB of views, "
          f"built in {time.perf_counter() - started:.1f} s; views present: "
          + ", ".join(f"{name} {int(count)}" for name, count in zip(VIEWS, views.mask.sum(axis=0))))
    targets = np.eye(args.labels, dtype=bool)[classes]
    held = np.arange(int(args.n * 0.9), args.n)
    print(f"torch threads: {torch.get_num_threads()}; training on {args.train} items, {args.steps} L-BFGS steps")
    names = [f"l{i}" for i in range(args.labels)]
    train(subset(views, np.arange(200)), targets[:200], names, "mean", steps=3)  # warm-up: torch.optim's imports
    print(f"{'fusion':<10}{'train s':>9}{'held-out acc':>14}{'classify s':>12}{'items/s':>11}{'peak MiB':>10}")
    for fusion in FUSIONS:
        started = time.perf_counter()
        model = train(subset(views, np.arange(args.train)), targets[:args.train], names, fusion,
                      steps=args.steps, seed=0)
        trained = time.perf_counter() - started
        model.predict_proba(subset(views, np.arange(1000)))  # warm-up: first-call allocations
        has_peak = reset_peak()
        base = _status("VmRSS")
        started = time.perf_counter()
        proba = model.predict_proba(views)
        seconds = time.perf_counter() - started
        peak = _status("VmHWM") if has_peak else None
        extra = f"{(peak - base) / 2**20:.0f}" if peak is not None and base is not None else "n/a"
        accuracy = float(np.mean(proba[held].argmax(axis=1) == classes[held]))
        print(f"{fusion:<10}{trained:>9.2f}{accuracy:>14.3f}{seconds:>12.2f}{args.n / seconds:>11.0f}{extra:>10}")
        del proba
    print(f"chance: {1 / args.labels:.3f}; the output is {args.n} × {args.labels} float32 "
          f"= {args.n * args.labels * 4 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
