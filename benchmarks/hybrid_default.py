"""Should search be hybrid by default? Ranking quality with and without --hybrid, side by side in one run.

A `tiny` model is trained on generated coloured shapes (tests/shapes.py, ~1 minute on 2 cores), then a
collection is indexed with it: held-out pictures of the 12 colour-shape classes under camera file names
(IMG_0001.png …), a quarter of them with a sidecar caption naming what they show, and notes: ones whose
text uses the colour and shape words in other senses ("the red cross volunteers", "a circle of friends") and
ones that each hold a made-up product code. Two query sets go through `mmsearch evaluate --compare
"--hybrid"` (the same request builder and search as `mmsearch search`):

- descriptive: "a red circle" etc., relevant = every picture of that class (the words describe content, as
  most CLIP queries do);
- words in the item: a note's made-up code, or the made-up word of a picture's file name, relevant = it.

Printed: recall@10, MRR and nDCG@10 of each set, hybrid off and on (alpha 0.5, RRF).

    python3 benchmarks/hybrid_default.py [--per-class 20] [--steps 600] [--json]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.shapes import COLOURS, HELD_OUT, SHAPES, caption, picture, train_tiny  # noqa: E402

DISTRACTORS = [
    "The red cross volunteers met at the hall and sorted blankets for the winter drive.",
    "A circle of friends gathered in the garden for tea; nobody talked about work.",
    "Green energy bonds fell again this quarter; the yellow pages advert was cancelled.",
    "The triangle player missed his cue twice, and the blue notes of the saxophone carried the piece.",
    "Cross the bridge, turn left at the red door, then follow the circle road to the market.",
    "Feeling blue today; the yellow taxi was late and the green tea had gone cold.",
    "Meeting notes: a triangle of responsibilities between sales, support and engineering.",
    "The red and green lights of the harbour; a circle of gulls over the boats.",
]


def code(n: int) -> str:
    """A made-up word that no tokenizer or other item knows: zq + letters from n."""
    letters = "bcdfghjklmnpqrstvwxz"
    return "zq" + "".join(letters[(n // 20 ** i) % 20] for i in range(4)) + "x"


def build(folder: Path, per_class: int, rng: random.Random) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The collection, and the two query sets as (query, relevant paths joined by |)."""
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    by_class: dict[tuple[str, str], list[str]] = {k: [] for k in classes}
    photos, number = folder / "photos", 0
    photos.mkdir(parents=True)
    named: list[tuple[str, str]] = []
    for c, s in classes:
        for i in range(per_class):
            number += 1
            path = photos / f"IMG_{number:04d}.png"
            if number % 15 == 0:  # some photos are named by their owner with a word of their own
                path = photos / f"{code(10_000 + number)}-{number}.png"
                named.append((code(10_000 + number), str(path)))
            picture(c, s, HELD_OUT + number).save(path)
            if rng.random() < 0.25:
                path.with_suffix(".txt").write_text(caption(c, s))
            by_class[(c, s)].append(str(path))
    notes = folder / "notes"
    notes.mkdir()
    for n in range(60):
        (notes / f"note-{n:02d}.txt").write_text(DISTRACTORS[n % len(DISTRACTORS)] + f" Entry {n}.")
    coded = []
    for n in range(20):
        path = notes / f"order-{n:02d}.txt"
        path.write_text(f"Order for part {code(n)} was shipped on Tuesday; invoice to follow.")
        coded.append((code(n), str(path)))
    descriptive = [(caption(c, s), "|".join(paths)) for (c, s), paths in by_class.items()]
    return descriptive, coded + named


def evaluate(rows: list[tuple[str, str]], csv_path: Path, env: dict[str, str]) -> dict:
    with csv_path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["query", "relevant"])
        writer.writerows(rows)
    done = subprocess.run([sys.executable, "-m", "mmsearch", "evaluate", str(csv_path), "-k", "10",
                           "--compare", "--hybrid", "--json"], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"evaluate failed: {done.stderr or done.stdout}")
    runs = json.loads(done.stdout)["runs"]
    return {("hybrid" if run["options"]["hybrid"] else "vector"): run["overall"] for run in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = root / "tiny-shapes.pt"
        figures = train_tiny(checkpoint, steps=args.steps, seed=0)
        print(f"trained tiny on shapes: {figures}", file=sys.stderr)
        descriptive, worded = build(root / "media", args.per_class, random.Random(3))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")},
               "MMSEARCH_DATA_DIR": str(root / "data"), "MMSEARCH_MODEL": "tiny", "MMSEARCH_PRETRAINED": str(checkpoint)}
        done = subprocess.run([sys.executable, "-m", "mmsearch", "index", str(root / "media"), "--json"], env=env,
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"index failed: {done.stderr}")
        results = {"descriptive": evaluate(descriptive, root / "descriptive.csv", env),
                   "words in the item": evaluate(worded, root / "worded.csv", env)}
    sizes = {"descriptive": len(descriptive), "words in the item": len(worded)}
    print(f"{'queries':<24}{'n':>4}  {'':8}{'recall@10':>10}{'MRR':>8}{'nDCG@10':>9}")
    for name, runs in results.items():
        for run in ("vector", "hybrid"):
            row = runs[run]
            print(f"{name:<24}{sizes[name]:>4}  {run:<8}{row['recall@10']:>10.3f}{row['mrr']:>8.3f}{row['ndcg@10']:>9.3f}")
    if args.json:
        print(json.dumps({"results": results, "queries": sizes, "training": figures}))


if __name__ == "__main__":
    main()
