"""A published audio–text model (LAION-CLAP) bridged into our image/text space by a linear map.

The map is fitted on text alone: the same caption corpus is embedded by CLAP's text tower and by our
text tower, and W solves min ‖S·W − T‖ (least squares) or the same with W orthogonal (Procrustes,
which keeps angles, so CLAP's audio–text geometry survives). Sounds then go CLAP audio → W → our space.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmsearch.errors import MMSearchError, ModelLoadError, first_line
from mmsearch.files import atomic_write

CLAP_RATE = 48_000
METHODS = ("procrustes", "lstsq")


def fit_map(source: np.ndarray, target: np.ndarray, method: str = "procrustes") -> np.ndarray:
    """W (d_source × d_target) taking source-space rows onto their target-space partners."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use {' or '.join(METHODS)}")
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if len(source) != len(target) or len(source) < 2:
        raise ValueError("need the same number (≥ 2) of source and target rows")
    if method == "lstsq":
        return np.linalg.lstsq(source, target, rcond=None)[0].astype(np.float32)
    if source.shape[1] != target.shape[1]:
        # Orthogonal maps need equal widths: pad the narrower side with zeros (a semi-orthogonal map).
        width = max(source.shape[1], target.shape[1])
        padded = _pad(source, width), _pad(target, width)
        from scipy.linalg import orthogonal_procrustes
        full, _ = orthogonal_procrustes(*padded)
        return full[: source.shape[1], : target.shape[1]].astype(np.float32)
    from scipy.linalg import orthogonal_procrustes
    return orthogonal_procrustes(source, target)[0].astype(np.float32)


def _pad(matrix: np.ndarray, width: int) -> np.ndarray:
    return np.pad(matrix, ((0, 0), (0, width - matrix.shape[1])))


def apply_map(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mapped = np.asarray(vectors, np.float32) @ weights
    return mapped / np.maximum(np.linalg.norm(mapped, axis=1, keepdims=True), 1e-12)


def retrieval_r1(mapped: np.ndarray, target: np.ndarray) -> float:
    """Share of rows whose nearest target row is their own partner: how well the map preserves pairing."""
    scores = apply_map(mapped, np.eye(mapped.shape[1], dtype=np.float32)) @ target.T
    return float(np.mean(scores.argmax(axis=1) == np.arange(len(target))))


def save_bridge(path: Path, weights: np.ndarray, meta: dict) -> None:
    from safetensors.numpy import save_file
    atomic_write(path, lambda tmp: save_file({"map": np.ascontiguousarray(weights, np.float32)}, tmp,
                                             metadata={"kind": "clap-bridge", "meta": json.dumps(meta, sort_keys=True)}))


def load_bridge(path: Path) -> tuple[np.ndarray, dict]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), "np") as handle:
            header = handle.metadata() or {}
            if header.get("kind") != "clap-bridge":
                raise ModelLoadError(f"{path} is not a CLAP bridge file")
            return handle.get_tensor("map"), json.loads(header["meta"])
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot read CLAP bridge {path}: {first_line(exc, 160)}") from None


def is_bridge(path: str) -> bool:
    try:
        from safetensors import safe_open
        with safe_open(path, "np") as handle:
            return (handle.metadata() or {}).get("kind") == "clap-bridge"
    except Exception:
        return False


DEFAULT_CHECKPOINT = "630k-audioset-best.pt"  # what laion_clap's load_ckpt() fetches for a non-fusion model
CLAP_AUDIO_MODEL = "HTSAT-tiny"  # the audio encoder of that checkpoint (and of 630k-best.pt)


def load_clap(checkpoint: str | None, device: str = "cpu"):
    """A LAION-CLAP model (optional extra ``clap``: pip install laion-clap) from a local checkpoint file, or
    with ``None`` its default checkpoint, which the package downloads into its own folder on first use.
    The package prints as it loads (a download's progress too): to a terminal on stderr, else nowhere, so
    stdout keeps one JSON document with --json and an error stays one line."""
    try:
        import laion_clap
    except ImportError:
        raise ModelLoadError("the CLAP audio model needs the optional package: pip install 'mmsearch[clap]'") from None
    except Exception as exc:  # installed but broken (laion-clap 1.1.7 wants numpy < 2, transformers, ...)
        raise ModelLoadError(f"cannot import laion_clap: {first_line(exc, 160)}") from None
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ModelLoadError(f"CLAP checkpoint {checkpoint} does not exist")
    with contextlib.redirect_stdout(sys.stderr if sys.stderr.isatty() else io.StringIO()):
        try:
            model = laion_clap.CLAP_Module(enable_fusion=False, device=device, amodel=CLAP_AUDIO_MODEL)
        except Exception as exc:  # its text tower comes from the Hugging Face hub (roberta-base)
            raise ModelLoadError(f"cannot set up LAION-CLAP (its text tower roberta-base comes from the Hugging "
                                 f"Face hub on first use): {first_line(exc, 160)}") from None
        try:
            if checkpoint is None:
                model.load_ckpt(verbose=False)
            else:
                model.load_ckpt(checkpoint, verbose=False)
        except Exception as exc:
            if checkpoint is not None:
                raise ModelLoadError(f"cannot load CLAP checkpoint {checkpoint}: {first_line(exc, 160)}") from None
            raise ModelLoadError(f"cannot download the LAION-CLAP checkpoint {DEFAULT_CHECKPOINT} "
                                 f"({first_line(exc, 120)}); offline, fetch it elsewhere and pass "
                                 f"--audio-checkpoint FILE") from None
    return model


def read_captions(path: str | Path) -> list[str]:
    """A caption corpus: one caption per line, blank lines and lines starting with # skipped, distinct, sorted."""
    try:
        with open(path, encoding="utf-8") as handle:
            return sorted({s for line in handle if (s := line.strip()) and not s.startswith("#")})
    except (OSError, UnicodeDecodeError) as exc:
        raise MMSearchError(f"cannot read captions {path}: {exc}") from None


def fit_bridge(clap, encode_texts: Callable[[list[str]], np.ndarray], captions: list[str],
               method: str = "procrustes", batch: int = 256) -> tuple[np.ndarray, float]:
    """The map from CLAP's space into ours, fitted on ``captions`` embedded by both text towers, and the
    held-out caption R@1 of a map fitted without the first tenth (how well the map generalises)."""
    source = np.concatenate([np.asarray(clap.get_text_embedding(captions[i:i + batch], use_tensor=False), np.float32)
                             for i in range(0, len(captions), batch)])
    target = np.concatenate([np.asarray(encode_texts(captions[i:i + batch]), np.float32)
                             for i in range(0, len(captions), batch)])
    split = max(1, len(captions) // 10)
    heldout_r1 = retrieval_r1(source[:split] @ fit_map(source[split:], target[split:], method), target[:split])
    return fit_map(source, target, method), heldout_r1


class ClapAudioEncoder:
    """Same interface as encoders.audio.AudioEncoder: CLAP audio embeddings mapped into our space. CLAP reads
    10 s (and crops a longer input at random), so a sound is cut into 10 s windows here: every window is
    embedded whole, a long sound's vector is their mean and its windows are its segments."""

    window_seconds = 10.0

    def __init__(self, clap, weights: np.ndarray, identity: dict):
        self.clap, self.weights, self.identity = clap, weights, identity
        self.dim = weights.shape[1]
        self.config = type("ClapConfig", (), {"sample_rate": CLAP_RATE})()

    def embed_waves(self, waves: Sequence[np.ndarray]) -> list:
        from .audio import EmbeddedSound
        size = int(self.window_seconds * CLAP_RATE)
        out = []
        for wave in waves:  # one sound's windows at a time bounds memory
            wave = np.asarray(wave, np.float32)
            pieces = [wave[i:i + size] for i in range(0, max(len(wave), 1), size)]
            vectors = np.concatenate([self._embed(pieces[i:i + 8]) for i in range(0, len(pieces), 8)])
            total = vectors.sum(axis=0, dtype=np.float64)
            pooled = (total / max(np.linalg.norm(total), 1e-12)).astype(np.float32)
            seconds = len(wave) / CLAP_RATE
            spans = [(i * self.window_seconds, min((i + 1) * self.window_seconds, seconds))
                     for i in range(len(vectors))] if len(vectors) > 1 else []
            out.append(EmbeddedSound(pooled, vectors if spans else vectors[:0], spans))
        return out

    def encode_waves(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([sound.vector for sound in self.embed_waves(waves)]) if len(waves) else \
            np.zeros((0, self.dim), np.float32)

    def _embed(self, pieces: list[np.ndarray]) -> np.ndarray:
        """Windows of one length at a time: CLAP takes an (N, T) array (and repeat-pads a short one itself)."""
        out = np.zeros((len(pieces), self.dim), np.float32)
        for length in dict.fromkeys(len(p) for p in pieces):  # in order: full windows, then the rest
            rows = [r for r, p in enumerate(pieces) if len(p) == length]
            audio = self.clap.get_audio_embedding_from_data(x=np.stack([pieces[r] for r in rows]), use_tensor=False)
            out[rows] = apply_map(np.asarray(audio, np.float32), self.weights)
        return out
