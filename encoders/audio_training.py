"""Contrastive training of the audio tower against the frozen text (and image) towers.

The image/text space never moves, so training only changes how sounds land in it: nothing already
indexed needs re-embedding except sounds. Loss: symmetric InfoNCE with a learnable temperature;
pairs that share a caption (or image) count as positives of each other, not as negatives.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mmsearch.errors import MMSearchError

from .audio import AudioTower, save_tower, windows


@dataclass(frozen=True)
class Pair:
    audio: str
    caption: str
    image: str | None = None


@dataclass
class TrainOptions:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    val_fraction: float = 0.2
    patience: int = 5
    seed: int = 0
    max_seconds: float = 30.0  # of each training sound kept in memory; crops are drawn from it
    time_limit: float | None = None  # seconds of training before stopping after the current epoch
    resume: bool = True


@dataclass
class EpochLog:
    epoch: int
    loss: float
    val_r1: float
    val_r5: float
    seconds: float


@dataclass
class TrainReport:
    checkpoint: str
    best_epoch: int
    best_r1: float
    best_r5: float
    train_pairs: int
    val_pairs: int
    epochs: list[EpochLog] = field(default_factory=list)
    stopped: str = "epochs"


def read_manifest(path: str | os.PathLike) -> list[Pair]:
    """CSV with columns audio, caption and optional image; paths relative to the manifest's folder."""
    path = Path(path)
    base = path.parent
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            if not {"audio", "caption"} <= columns:
                raise MMSearchError(f"manifest {path} needs columns audio,caption[,image]; found {sorted(columns)}")
            rows = list(reader)
    except OSError as exc:
        raise MMSearchError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MMSearchError(f"manifest {path} is not a UTF-8 CSV file: {exc}") from None
    pairs = []
    for line, row in enumerate(rows, start=2):
        audio, caption, image = (row.get("audio") or "").strip(), (row.get("caption") or "").strip(), \
            (row.get("image") or "").strip()
        if not audio or not caption:
            raise MMSearchError(f"manifest {path} line {line}: audio and caption are required")
        resolved = [str(base / p) if p else None for p in (audio, image)]
        for item in resolved:
            if item and not os.path.isfile(item):
                raise MMSearchError(f"manifest {path} line {line}: file not found: {item}")
        pairs.append(Pair(resolved[0], caption, resolved[1]))
    if len(pairs) < 4:
        raise MMSearchError(f"manifest {path} has {len(pairs)} pairs; at least 4 are needed to train")
    return pairs


def _targets(keys: list[int]) -> torch.Tensor:
    """Row-normalised positives: every pair sharing the key (same caption or image) is a positive."""
    k = torch.tensor(keys)
    same = (k[:, None] == k[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def _info_nce(audio: torch.Tensor, other: torch.Tensor, keys: list[int], scale: torch.Tensor) -> torch.Tensor:
    logits = scale * audio @ other.T
    targets = _targets(keys)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))


class Trainer:
    """Holds decoded sounds and frozen targets; runs epochs, validation, early stopping and checkpoints."""

    def __init__(self, tower: AudioTower, pairs: list[Pair], text_vectors: np.ndarray, caption_ids: list[int],
                 image_vectors: dict[int, np.ndarray], waves: list[np.ndarray], options: TrainOptions,
                 checkpoint: Path, trained_for: dict, log: Callable[[str], None] = lambda _: None):
        self.tower, self.options, self.checkpoint, self.log = tower, options, checkpoint, log
        self.trained_for = trained_for
        self.text = torch.from_numpy(text_vectors)
        self.caption_ids = caption_ids
        self.images = {i: torch.from_numpy(v) for i, v in image_vectors.items()}
        self.image_keys = _image_keys(pairs)
        self.waves = waves
        order = np.random.default_rng(options.seed).permutation(len(pairs))
        n_val = max(1, int(round(len(pairs) * options.val_fraction)))
        self.val, self.train = sorted(order[:n_val]), sorted(order[n_val:])
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.optimizer = torch.optim.AdamW(list(tower.parameters()) + [self.logit_scale], lr=options.lr,
                                           weight_decay=1e-4)
        self.rng = np.random.default_rng(options.seed + 1)
        self.state_path = checkpoint.with_name(checkpoint.name + ".state.pt")

    def _crop(self, index: int) -> np.ndarray:
        wave, size = self.waves[index], self.tower.config.window_samples
        if len(wave) <= size:
            return windows(wave, self.tower.config)[0]
        start = int(self.rng.integers(0, len(wave) - size + 1))
        return wave[start:start + size]

    def _epoch(self) -> float:
        self.tower.train()
        order = self.rng.permutation(self.train)
        losses = []
        for start in range(0, len(order), self.options.batch_size):
            batch = [int(i) for i in order[start:start + self.options.batch_size]]
            if len(batch) < 2:
                continue
            waves = torch.from_numpy(np.stack([self._crop(i) for i in batch]))
            audio = self.tower(waves)
            scale = self.logit_scale.clamp(max=math.log(100)).exp()
            captions = [self.caption_ids[i] for i in batch]
            loss = _info_nce(audio, self.text[captions], captions, scale)
            with_image = [j for j, i in enumerate(batch) if i in self.images]
            if len(with_image) >= 2:
                keys = [self.image_keys[batch[j]] for j in with_image]
                targets = torch.stack([self.images[batch[j]] for j in with_image])
                loss = loss + _info_nce(audio[with_image], targets, keys, scale)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")

    def validate(self) -> tuple[float, float]:
        """Audio→text recall@1/@5 over the distinct captions of the validation pairs."""
        from .audio import AudioEncoder
        encoder = AudioEncoder(self.tower, torch.device("cpu"), {})
        audio = torch.from_numpy(encoder.encode_waves([self.waves[i] for i in self.val]))
        captions = sorted({self.caption_ids[i] for i in self.val})
        ranks = (audio @ self.text[captions].T).argsort(dim=1, descending=True)
        truth = torch.tensor([captions.index(self.caption_ids[i]) for i in self.val])
        position = (ranks == truth[:, None]).float().argmax(dim=1)
        return float((position < 1).float().mean()), float((position < 5).float().mean())

    def fit(self) -> TrainReport:
        report = TrainReport(str(self.checkpoint), 0, -1.0, -1.0, len(self.train), len(self.val))
        first_epoch, stale = 1, 0
        if self.options.resume and self.state_path.exists():
            state = torch.load(self.state_path, weights_only=False)
            self.tower.load_state_dict(state["tower"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.logit_scale.data.copy_(state["logit_scale"])
            first_epoch, stale = state["epoch"] + 1, state["stale"]
            report.best_epoch, report.best_r1, report.best_r5 = state["best"]
            self.log(f"resuming after epoch {state['epoch']}")
        started = time.monotonic()
        for epoch in range(first_epoch, self.options.epochs + 1):
            t0 = time.monotonic()
            loss = self._epoch()
            r1, r5 = self.validate()
            report.epochs.append(EpochLog(epoch, loss, r1, r5, time.monotonic() - t0))
            self.log(f"epoch {epoch}: loss {loss:.4f}  val audio→text R@1 {r1:.3f}  R@5 {r5:.3f}")
            if (r5, r1) > (report.best_r5, report.best_r1):
                report.best_epoch, report.best_r1, report.best_r5 = epoch, r1, r5
                stale = 0
                save_tower(self.tower, self.checkpoint, {"epoch": epoch, "val_r1": r1, "val_r5": r5,
                                                         "trained_for": self.trained_for})
            else:
                stale += 1
            torch.save({"tower": self.tower.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "logit_scale": self.logit_scale.data, "epoch": epoch, "stale": stale,
                        "best": (report.best_epoch, report.best_r1, report.best_r5)}, self.state_path)
            if stale >= self.options.patience:
                report.stopped = "early stopping"
                break
            if self.options.time_limit and time.monotonic() - started > self.options.time_limit:
                report.stopped = "time limit"
                break
        self.tower.eval()
        return report


def _image_keys(pairs: list[Pair]) -> dict[int, int]:
    paths = sorted({p.image for p in pairs if p.image})
    return {i: paths.index(p.image) for i, p in enumerate(pairs) if p.image}
