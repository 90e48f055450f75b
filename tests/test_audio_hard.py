"""Issue #14: train-audio tells apart sounds whose captions differ by one word (text vectors at cosine ≥ 0.8)
and whose classes differ by timbre only, on pitches and lengths it never trained on; the first trainer's
figure on the same set is printed beside it."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from mmsearch.encoders.audio_training import TrainOptions, read_manifest
from mmsearch.library import Library
from mmsearch.settings import load_settings

from .hard_sounds import CAPTIONS, HELD_OUT_NOTES, HELD_OUT_SECONDS, TRAIN_NOTES, TRAIN_SECONDS, make_hard_sets

EPOCHS, PATIENCE = "60", "15"


def held_out_figures(library: Library, held: Path) -> dict:
    """text→audio R@5 (each caption's held-out notes among its top 5 of all of them) and audio→text R@1
    (nearest of the captions), by the vectors search compares: the data dir's towers, uncentred cosine."""
    pairs = read_manifest(held)
    captions = sorted({p.caption for p in pairs})
    text = np.concatenate([library.embed_query("text", c) for c in captions])
    audio = np.concatenate([library.embed_query("audio", Path(p.audio).read_bytes()) for p in pairs])
    truth = np.array([captions.index(p.caption) for p in pairs])
    scores = audio @ text.T
    per_caption = np.bincount(truth)
    t2a = np.mean([np.isin(np.argsort(-scores[:, k])[:5], np.flatnonzero(truth == k)).sum() / min(5, per_caption[k])
                   for k in range(len(captions))])
    return {"text→audio R@5": float(t2a), "audio→text R@1": float((scores.argmax(axis=1) == truth).mean()),
            "chance text→audio R@5": float(np.mean(np.minimum(5, per_caption)) / len(pairs)),
            "chance audio→text R@1": 1 / len(captions)}


def test_train_audio_learns_captions_that_differ_by_one_word(runner, tmp_path, settings):
    assert not set(TRAIN_NOTES) & set(HELD_OUT_NOTES) and not set(TRAIN_SECONDS) & set(HELD_OUT_SECONDS)
    train, held = make_hard_sets(tmp_path / "hard")
    library = Library(settings)
    text = np.concatenate([library.embed_query("text", c) for c in CAPTIONS.values()])
    cosine = (text @ text.T)[~np.eye(len(CAPTIONS), dtype=bool)]
    assert cosine.min() >= 0.8, f"the captions must be near each other in the text tower: {cosine.min():.3f}"

    started = time.monotonic()
    result = runner("train-audio", str(train), "--epochs", EPOCHS, "--patience", PATIENCE, "--json")
    seconds = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    trained = json.loads(result.stdout)
    assert "(chance 0.125)" in result.stderr and "validation: 16 held-out pairs (16 recordings)" in result.stderr
    assert trained["chance_r1"] == 1 / 8 and len(trained["history"]) == trained["epochs"]
    assert trained["val_captions"] == 8 and (trained["warning"] is None) == (trained["val_r1"] >= 2 / 8)
    new = held_out_figures(Library(settings), held)

    # The first trainer on the same pairs, in a data dir of its own, with its own defaults (patience 5).
    old_settings = load_settings({"data_dir": str(tmp_path / "old"), "model": "tiny", "batch_size": 4}, env={})
    old_library = Library(old_settings)
    report = old_library.train_audio(str(train), TrainOptions.legacy(epochs=30, resume=False))
    assert (report.warning is None) == (report.best_r1 >= 2 * report.chance_r1)
    old = held_out_figures(Library(old_settings), held)

    print(f"\ncaption cosine {cosine.min():.3f}–{cosine.max():.3f}; train-audio took {seconds:.0f} s "
          f"({trained['epochs']} epochs, best {trained['best_epoch']}, val R@1 {trained['val_r1']:.3f})")
    for name in ("text→audio R@5", "audio→text R@1"):
        print(f"{name}: new {new[name]:.3f}  first trainer {old[name]:.3f}  chance {new['chance ' + name]:.3f}")
    assert new["chance text→audio R@5"] <= 0.2 and new["chance audio→text R@1"] <= 0.2
    assert new["text→audio R@5"] >= 0.8, (new, old)
    assert new["audio→text R@1"] >= 0.6, (new, old)
