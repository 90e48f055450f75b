"""Training pairs for the audio tower: the manifest (audio, caption[, image]) and the validation split, which
holds out recordings (every pair of a held-out sound file), per caption."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsearch.errors import MMSearchError


@dataclass(frozen=True)
class Pair:
    audio: str
    caption: str
    image: str | None = None


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


def split(pairs: list[Pair], keys: list[int], fraction: float, seed: int, by_recording: bool
          ) -> tuple[list[int], list[int]]:
    """(validation, training) pair indices. By recording: every pair of a held-out sound file is held out,
    and files are held out per caption (a fraction of each caption's files, one at least where it has two
    or more); otherwise (the first trainer) a random fraction of the pairs."""
    rng = np.random.default_rng(seed)
    if not by_recording:
        order = rng.permutation(len(pairs))
        n_val = max(1, int(round(len(pairs) * fraction)))
        return sorted(int(i) for i in order[:n_val]), sorted(int(i) for i in order[n_val:])
    files = sorted({p.audio for p in pairs})
    first_key = {p.audio: keys[i] for i, p in reversed(list(enumerate(pairs)))}
    by_key: dict[int, list[str]] = {}
    for name in files:
        by_key.setdefault(first_key[name], []).append(name)
    held, singles = set(), []
    for group in by_key.values():
        group = [group[i] for i in rng.permutation(len(group))]
        if len(group) == 1:
            singles += group
        else:
            held |= set(group[:min(len(group) - 1, max(1, int(round(len(group) * fraction))))])
    singles = [singles[i] for i in rng.permutation(len(singles))]
    held |= set(singles[:int(round(len(singles) * fraction))])
    if not held or len(held) == len(files):
        held = {files[int(i)] for i in rng.permutation(len(files))[:max(1, int(round(len(files) * fraction)))]}
    val = [i for i, p in enumerate(pairs) if p.audio in held]
    return val, [i for i, p in enumerate(pairs) if p.audio not in held]
