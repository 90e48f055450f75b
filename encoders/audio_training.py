"""Contrastive training of the audio tower against the frozen text (and image) towers.

The image/text space never moves, so training only changes how sounds land in it: nothing already
indexed needs re-embedding except sounds. Loss: symmetric InfoNCE with a learnable temperature;
pairs that share a caption (or image) count as positives of each other, not as negatives.

Captions that differ by one word have text vectors at cosine 0.8–0.99: nearly all of each is the caption
set's shared mean, and InfoNCE on the raw vectors sees logit gaps of a fraction of one unit. So when the
captions share most of their length (issue #14; CENTRE_ABOVE) the caption loss compares directions *seen from that mean* — audio and text vectors both minus
the mean, re-normalised — against every distinct caption at once, over batches that cycle through the
captions, on augmented sounds; validation holds out recordings and keeps the tower with the best R@1. A unit
vector's direction from the mean fixes the vector itself, so the tower still outputs vectors in the shared
space, compared uncentred with text and image vectors by search. ``TrainOptions.legacy()`` is the first
trainer, for comparison.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .audio import AudioTower, save_tower
from .audio_augment import perturb, place, spec_augmented
from .audio_pairs import Pair, read_manifest, split

__all__ = ["Pair", "TrainOptions", "Trainer", "TrainReport", "read_manifest"]


CENTRE_ABOVE = 0.85  # the captions' mean norm from which training contrasts from the mean


@dataclass
class TrainOptions:
    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    val_fraction: float = 0.2
    patience: int = 10
    seed: int = 0
    max_seconds: float = 30.0  # of each training sound kept in memory; crops are drawn from it
    time_limit: float | None = None  # seconds of training before stopping after the current epoch
    resume: bool = True  # continue an interrupted run (its state file); a finished one leaves none
    # The issue #14 recipe; each piece can be switched off on its own (legacy(): all off, the first trainer).
    # contrast directions seen from the captions' mean; None: only when the captions share most of their
    # length (mean norm ≥ CENTRE_ABOVE): on far-apart captions it cost text→audio (easy set R@5 1.0 → 0.825)
    centre: bool | None = None
    align: bool = True  # also pull each sound onto its caption's vector
    all_captions: bool = True  # audio→text against every distinct caption, not only the batch's
    balanced: bool = True  # batches cycle through the captions
    augment: bool = True  # gain, shift, speed, noise, SpecAugment
    split_recordings: bool = True  # validation holds out recordings, stratified by caption (else: pairs)
    select: str = "r1"  # keep the epoch with the best val R@1 + text→audio R-precision (ties: R@5, then val
    # loss); "r5": R@5 first

    @classmethod
    def legacy(cls, **values) -> "TrainOptions":
        return cls(**{"batch_size": 32, "lr": 1e-3, "patience": 5, "centre": False, "align": False,
                      "all_captions": False, "balanced": False, "augment": False, "split_recordings": False,
                      "select": "r5", **values})


@dataclass
class EpochLog:
    epoch: int
    loss: float
    val_r1: float
    val_r5: float
    seconds: float
    val_loss: float = float("nan")


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
    val_captions: int = 0  # distinct captions the validation recordings are ranked against
    chance_r1: float = 0.0
    chance_r5: float = 0.0
    warning: str | None = None


def _targets(keys: list[int]) -> torch.Tensor:
    """Row-normalised positives: every pair sharing the key (same caption or image) is a positive."""
    k = torch.tensor(keys)
    same = (k[:, None] == k[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def _info_nce(audio: torch.Tensor, other: torch.Tensor, keys: list[int], scale: torch.Tensor) -> torch.Tensor:
    logits = scale * audio @ other.T
    targets = _targets(keys)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))


def _from_mean(vectors: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """Directions seen from the caption set's mean (unchanged without one)."""
    return vectors if mean is None else F.normalize(vectors - mean, dim=-1)


def caption_loss(audio: torch.Tensor, keys: list[int], text: torch.Tensor, mean: torch.Tensor | None,
                 scale: torch.Tensor, all_captions: bool, align: bool = False) -> torch.Tensor:
    """Audio→text and text→audio InfoNCE against the captions ``text`` (K distinct, row ``keys[i]`` is
    audio i's). ``all_captions``: each sound against every caption; each caption in the batch against the
    batch's sounds. Otherwise the first trainer's: one caption column per pair of the batch. ``align`` adds
    each sound's squared distance to its caption's vector, in units of the captions' spread around their
    mean: it fixes how far along the mean a sound lies, which directions seen from the mean leave free and
    which decides text→audio ranking in the uncentred space (a sound too far along it comes first for
    every caption)."""
    pull = 0.0
    if align:
        spread = (1 - text.mean(dim=0).square().sum()).clamp(min=1e-3)
        pull = (1 - (audio * text[keys]).sum(dim=1)).mean() / spread
    audio, text = _from_mean(audio, mean), _from_mean(text, mean)
    if not all_captions:
        return _info_nce(audio, text[keys], keys, scale) + pull
    logits = scale * audio @ text.T
    k = torch.tensor(keys)
    present = torch.tensor(sorted(set(keys)))
    same = (present[:, None] == k[None, :]).float()
    return 0.5 * (F.cross_entropy(logits, k) + F.cross_entropy(logits[:, present].T, same / same.sum(1, True))) + pull


class Trainer:
    """Holds decoded sounds and frozen targets; runs epochs, validation, early stopping and checkpoints."""

    def __init__(self, tower: AudioTower, pairs: list[Pair], text_vectors: np.ndarray, caption_ids: list[int],
                 image_vectors: dict[int, np.ndarray], waves: list[np.ndarray], options: TrainOptions,
                 checkpoint: Path, trained_for: dict, log: Callable[[str], None] = lambda _: None):
        self.tower, self.options, self.checkpoint, self.log = tower, options, checkpoint, log
        self.trained_for = trained_for
        self.text = torch.from_numpy(text_vectors)
        shared = float(self.text.mean(dim=0).norm())  # 0.70 for the easy set's captions, 0.975 for one-word ones
        centre = options.centre if options.centre is not None else shared >= CENTRE_ABOVE
        self.mean = self.text.mean(dim=0) if centre else None
        self.caption_ids = caption_ids
        self.images = {i: torch.from_numpy(v) for i, v in image_vectors.items()}
        self.image_keys = _image_keys(pairs)
        self.waves = waves
        self.val, self.train = split(pairs, caption_ids, options.val_fraction, options.seed, options.split_recordings)
        self.val_captions = sorted({caption_ids[i] for i in self.val})
        self.val_recordings = len({pairs[i].audio for i in self.val})
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.optimizer = torch.optim.AdamW(list(tower.parameters()) + [self.logit_scale], lr=options.lr,
                                           weight_decay=1e-4)
        self.rng = np.random.default_rng(options.seed + 1)
        self.masks = torch.Generator().manual_seed(options.seed + 2)
        self.state_path = checkpoint.with_name(checkpoint.name + ".state.pt")

    def _crop(self, index: int) -> np.ndarray:
        wave = perturb(self.waves[index], self.rng) if self.options.augment else self.waves[index]
        return place(wave, self.tower.config.window_samples, self.rng, shift=self.options.augment)

    def _order(self) -> list[int]:
        """This epoch's training pairs: shuffled, or (balanced) dealt round-robin from each caption's
        shuffled pairs, so every batch holds as many captions as it can, each about equally often."""
        if not self.options.balanced:
            return [int(i) for i in self.rng.permutation(self.train)]
        groups: dict[int, list[int]] = {}
        for i in self.rng.permutation(self.train):
            groups.setdefault(self.caption_ids[i], []).append(int(i))
        queues = [groups[k] for k in self.rng.permutation(sorted(groups))]
        return [q[r] for r in range(max(map(len, queues))) for q in queues if r < len(q)]

    def _scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def _epoch(self) -> float:
        self.tower.train()
        order = self._order()
        losses = []
        for start in range(0, len(order), self.options.batch_size):
            batch = order[start:start + self.options.batch_size]
            if len(batch) < 2:
                continue
            waves = torch.from_numpy(np.stack([self._crop(i) for i in batch]))
            if self.options.augment:
                with spec_augmented(self.tower, self.masks):
                    audio = self.tower(waves)
            else:
                audio = self.tower(waves)
            captions = [self.caption_ids[i] for i in batch]
            loss = caption_loss(audio, captions, self.text, self.mean, self._scale(), self.options.all_captions,
                                self.options.align)
            with_image = [j for j, i in enumerate(batch) if i in self.images]
            if len(with_image) >= 2:
                keys = [self.image_keys[batch[j]] for j in with_image]
                targets = torch.stack([self.images[batch[j]] for j in with_image])
                loss = loss + _info_nce(audio[with_image], targets, keys, self._scale())
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else float("nan")

    def chance(self) -> tuple[float, float]:
        """R@1 and R@5 of a tower that ranks the validation captions at random."""
        n = max(1, len(self.val_captions))
        return 1 / n, min(5, n) / n

    def validate(self) -> tuple[float, float, float, float]:
        """Audio→text recall@1/@5 of the held-out recordings over the distinct captions of the validation
        pairs, in the shared (uncentred) space search uses, the audio→text loss there, and text→audio:
        each caption's R-precision over the held-out recordings (the share of its own among its top n, n
        the number it has), so an epoch is also kept for ranking sounds by words."""
        from .audio import AudioEncoder
        encoder = AudioEncoder(self.tower, torch.device("cpu"), {})
        audio = torch.from_numpy(encoder.encode_waves([self.waves[i] for i in self.val]))
        captions = self.val_captions
        ranks = (audio @ self.text[captions].T).argsort(dim=1, descending=True)
        truth = torch.tensor([captions.index(self.caption_ids[i]) for i in self.val])
        position = (ranks == truth[:, None]).float().argmax(dim=1)
        with torch.no_grad():
            logits = self._scale() * _from_mean(audio, self.mean) @ _from_mean(self.text[captions], self.mean).T
            loss = float(F.cross_entropy(logits, truth))
        by_caption = (self.text[captions] @ audio.T).argsort(dim=1, descending=True)  # (captions, recordings)
        own = [truth[by_caption[c, :int((truth == c).sum())]] == c for c in range(len(captions))]
        text_audio = float(torch.cat(own).float().mean())
        return float((position < 1).float().mean()), float((position < 5).float().mean()), loss, text_audio

    def _key(self, r1: float, r5: float, loss: float, text_audio: float = 0.0) -> tuple:
        # both directions count: audio→text R@1 alone kept epochs that rank sounds by words worse (the
        # easy set's text→audio R@5 fell from 1.0 to 0.825 on a quiet machine)
        return (r5, r1) if self.options.select == "r5" else (r1 + text_audio, r5, -loss)

    def fit(self) -> TrainReport:
        report = TrainReport(str(self.checkpoint), 0, -1.0, -1.0, len(self.train), len(self.val),
                             val_captions=len(self.val_captions))
        report.chance_r1, report.chance_r5 = chance_r1, chance_r5 = self.chance()
        first_epoch, stale, best_key = 1, 0, None
        if self.options.resume and self.state_path.exists():
            state = torch.load(self.state_path, weights_only=False)
            self.tower.load_state_dict(state["tower"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.logit_scale.data.copy_(state["logit_scale"])
            first_epoch, stale = state["epoch"] + 1, state["stale"]
            report.best_epoch, report.best_r1, report.best_r5 = state["best"]
            best_key = state.get("best_key") or self._key(report.best_r1, report.best_r5, math.inf)
            self.log(f"resuming after epoch {state['epoch']}")
        self.log(f"captions' mean norm {float(self.text.mean(dim=0).norm()):.3f}: contrast "
                 f"{'from their mean' if self.mean is not None else 'as they are'}")
        self.log(f"validation: {len(self.val)} held-out pairs ({self.val_recordings} recordings)"
                 f" against {len(self.val_captions)} distinct captions; chance R@1 {chance_r1:.3f}, "
                 f"R@5 {chance_r5:.3f}")
        started = time.monotonic()
        for epoch in range(first_epoch, self.options.epochs + 1):
            t0 = time.monotonic()
            loss = self._epoch()
            r1, r5, val_loss, text_audio = self.validate()
            report.epochs.append(EpochLog(epoch, loss, r1, r5, time.monotonic() - t0, val_loss))
            self.log(f"epoch {epoch}: loss {loss:.4f}  val audio→text R@1 {r1:.3f} (chance {chance_r1:.3f})  "
                     f"R@5 {r5:.3f} (chance {chance_r5:.3f})  text→audio {text_audio:.3f}")
            key = self._key(r1, r5, val_loss, text_audio)
            if best_key is None or tuple(key) > tuple(best_key):
                report.best_epoch, report.best_r1, report.best_r5, best_key = epoch, r1, r5, key
                stale = 0
                save_tower(self.tower, self.checkpoint, {"epoch": epoch, "val_r1": r1, "val_r5": r5,
                                                         "trained_for": self.trained_for})
            else:
                stale += 1
            torch.save({"tower": self.tower.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "logit_scale": self.logit_scale.data, "epoch": epoch, "stale": stale,
                        "best": (report.best_epoch, report.best_r1, report.best_r5), "best_key": best_key},
                       self.state_path)
            if stale >= self.options.patience:
                report.stopped = "early stopping"
                break
            if self.options.time_limit and time.monotonic() - started > self.options.time_limit:
                report.stopped = "time limit"
                break
        self.tower.eval()
        self.state_path.unlink(missing_ok=True)  # finished: only a run cut short (Ctrl-C, a crash) resumes
        report.warning = _warning(report)
        self.log(f"best epoch {report.best_epoch}: val audio→text R@1 {report.best_r1:.3f} (chance {chance_r1:.3f}), "
                 f"R@5 {report.best_r5:.3f} (chance {chance_r5:.3f}) over {len(self.val)} held-out pairs")
        if report.warning:
            self.log(f"warning: {report.warning}")
        return report


def _warning(report: TrainReport) -> str | None:
    """Said when the kept tower's validation R@1 is within 2× chance: it has not learnt these captions apart."""
    if report.best_r1 >= 2 * report.chance_r1 or report.best_epoch == 0:
        return None
    return (f"validation audio→text R@1 {report.best_r1:.3f} is within 2× chance ({report.chance_r1:.3f}): the "
            f"tower does not tell these {report.val_captions} captions apart; more pairs per caption, more epochs "
            f"or more distinct sounds may help")


def _image_keys(pairs: list[Pair]) -> dict[int, int]:
    paths = sorted({p.image for p in pairs if p.image})
    return {i: paths.index(p.image) for i, p in enumerate(pairs) if p.image}
