#!/usr/bin/env python3
"""What each piece of train-audio's recipe (issue #14) contributes, measured on the generated hard set.

The hard set (tests/hard_sounds.py): eight instruments, captions "a note played on a flute/violin/…" that
differ by one word (tiny text tower cosine 0.84–0.996), 10 training notes per instrument at even MIDI notes
and four lengths, 5 held-out notes per instrument at the odd notes and three other lengths. Each row trains
the tiny audio tower from the same random start with TrainOptions (the new recipe: 60 epochs, patience 15, as
tests/test_audio_hard.py; the first trainer: 30 epochs, patience 5, as issue #14 measured it)
and embeds the held-out notes with the tower train-audio keeps (the best validation epoch); figures are
measured in the shared, uncentred space that search uses:

- text→audio R@5: of each caption's 5 held-out notes, the fraction in its top 5 of the 40 (chance 0.125)
- audio→text R@1: held-out notes whose nearest of the 8 captions is their own (chance 0.125)

Rows: the first trainer (``legacy``), the new recipe (``new``), the new recipe with one piece removed
(``new -piece``) and the first trainer with one piece added (``legacy +piece``); means over seeds, each
seed's figures in brackets.

    python3 benchmarks/audio_training.py [--seeds 1] [--epochs 60] [--only new,legacy]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmsearch.encoders.audio import AudioEncoder, build_tower, default_config, load_tower  # noqa: E402
from mmsearch.encoders.audio_training import TrainOptions, Trainer, read_manifest  # noqa: E402
from mmsearch.encoders.loading import load_clip_encoder, resolve_spec  # noqa: E402
from mmsearch.indexer.decode import decode_audio  # noqa: E402
from tests.hard_sounds import make_hard_sets  # noqa: E402

PIECES = {"centre": {"centre": False}, "align": {"align": False}, "all_captions": {"all_captions": False}, "balanced": {"balanced": False},
          "augment": {"augment": False}, "split_recordings": {"split_recordings": False}, "select": {"select": "r5"},
          "steps": {"batch_size": 32, "lr": 1e-3}}


def configurations(epochs: int) -> dict[str, TrainOptions]:
    new = TrainOptions(epochs=epochs, patience=15, resume=False)  # as tests/test_audio_hard.py runs it
    legacy = TrainOptions.legacy(epochs=30, resume=False)  # the first trainer, as the issue measured it
    rows = {"legacy": legacy, "legacy no-early-stop": replace(legacy, epochs=epochs, patience=epochs), "new": new}
    for piece, off in PIECES.items():
        rows[f"new -{piece}"] = replace(new, **off)
    for piece, off in PIECES.items():
        rows[f"legacy +{piece}"] = replace(legacy, **{k: getattr(new, k) for k in off})
    return rows


def load(manifest: Path, rate: int) -> tuple[list, list[np.ndarray]]:
    pairs = read_manifest(manifest)
    return pairs, [decode_audio(Path(p.audio).read_bytes(), rate, 30.0).wave for p in pairs]


def held_out_figures(tower, waves: list[np.ndarray], truth: np.ndarray, text: np.ndarray) -> tuple[float, float]:
    """(text→audio R@5, audio→text R@1) of held-out sounds against the captions, uncentred cosine."""
    scores = AudioEncoder(tower, torch.device("cpu"), {}).encode_waves(waves) @ text.T
    a2t = float((scores.argmax(axis=1) == truth).mean())
    t2a = np.mean([np.isin(np.argsort(-scores[:, k])[:5], np.flatnonzero(truth == k)).sum() / min(5, (truth == k).sum())
                   for k in range(len(text))])
    return float(t2a), a2t


def train_once(options: TrainOptions, train, held, text, captions, folder: Path) -> dict:
    pairs, waves = train
    tower = build_tower(default_config(text.shape[1], small=True))
    checkpoint = folder / "tower.safetensors"
    for stale in folder.glob("tower.safetensors*"):
        stale.unlink()
    started = time.monotonic()
    report = Trainer(tower, pairs, text, [captions.index(p.caption) for p in pairs], {}, waves, options,
                     checkpoint, {}).fit()
    seconds = time.monotonic() - started
    kept, _ = load_tower(checkpoint)
    truth = np.array([captions.index(p.caption) for p in held[0]])
    t2a, a2t = held_out_figures(kept, held[1], truth, text)
    return {"t2a": t2a, "a2t": a2t, "val_r1": report.best_r1, "epochs": len(report.epochs), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--only", help="comma-separated row names")
    args = parser.parse_args()
    torch.set_num_threads(2)
    text_encoder = load_clip_encoder(resolve_spec("tiny"), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_manifest, held_manifest = make_hard_sets(folder / "sets")
        rate = default_config(64, small=True).sample_rate
        train, held = load(train_manifest, rate), load(held_manifest, rate)
        captions = sorted({p.caption for p in train[0]})
        text = text_encoder.encode_texts(captions)
        cos = text @ text.T
        off = cos[~np.eye(len(captions), dtype=bool)]
        print(f"{len(train[0])} training pairs, {len(held[0])} held-out notes, {len(captions)} captions at "
              f"cosine {off.min():.3f}–{off.max():.3f} (mean {off.mean():.3f}); chance: text→audio R@5 0.125, "
              f"audio→text R@1 {1 / len(captions):.3f}\n")
        rows = configurations(args.epochs)
        chosen = args.only.split(",") if args.only else list(rows)
        print(f"| {'training':24s} | text→audio R@5 | audio→text R@1 | val R@1 | epochs | seconds |")
        print(f"|{'-' * 26}|----------------|----------------|---------|--------|---------|")
        for name in chosen:
            runs = [train_once(replace(rows[name], seed=seed), train, held, text, captions, folder)
                    for seed in range(args.seeds)]

            def cell(key: str, digits: int = 3) -> str:
                values = [r[key] for r in runs]
                each = "/".join(f"{v:.{digits}f}" for v in values)
                return f"{np.mean(values):.{digits}f} [{each}]" if len(runs) > 1 else f"{values[0]:.{digits}f}"
            print(f"| {name:24s} | {cell('t2a', 2)} | {cell('a2t', 2)} | {cell('val_r1', 2)} | "
                  f"{cell('epochs', 0)} | {cell('seconds', 0)} |", flush=True)


if __name__ == "__main__":
    main()
