"""A published audio–text model (LAION-CLAP) bridged into our image/text space by a linear map.

The map is fitted on text alone: the same caption corpus is embedded by CLAP's text tower and by our
text tower, and W solves min ‖S·W − T‖ (least squares) or the same with W orthogonal (Procrustes,
which keeps angles, so CLAP's audio–text geometry survives). Sounds then go CLAP audio → W → our space.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from mmsearch.errors import ModelLoadError, first_line
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


def load_clap(checkpoint: str, device: str = "cpu"):
    """A LAION-CLAP model from a local checkpoint (optional extra ``clap``: pip install laion-clap)."""
    try:
        import laion_clap
    except ImportError:
        raise ModelLoadError("the CLAP route needs the optional package: pip install 'mmsearch[clap]'") from None
    if not Path(checkpoint).is_file():
        raise ModelLoadError(f"CLAP checkpoint {checkpoint} does not exist")
    try:
        model = laion_clap.CLAP_Module(enable_fusion=False, device=device)
        model.load_ckpt(checkpoint, verbose=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot load CLAP checkpoint {checkpoint}: {first_line(exc, 160)}") from None
    return model


class ClapAudioEncoder:
    """Same interface as encoders.audio.AudioEncoder: CLAP audio embeddings mapped into our space."""

    def __init__(self, clap, weights: np.ndarray, identity: dict):
        self.clap, self.weights, self.identity = clap, weights, identity
        self.dim = weights.shape[1]
        self.config = type("ClapConfig", (), {"sample_rate": CLAP_RATE})()

    def embed_waves(self, waves: Sequence[np.ndarray]) -> list:
        """Whole sounds only: CLAP pools its own windows, so a CLAP-bridged sound has no segments."""
        from .audio import EmbeddedSound
        return [EmbeddedSound(v, np.zeros((0, self.dim), np.float32), []) for v in self.encode_waves(waves)]

    def encode_waves(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(waves), self.dim), np.float32)
        for row, wave in enumerate(waves):  # CLAP takes ~10 s windows itself; one sound at a time bounds memory
            audio = self.clap.get_audio_embedding_from_data(x=np.asarray(wave, np.float32)[None, :], use_tensor=False)
            out[row] = apply_map(np.asarray(audio, np.float32), self.weights)[0]
        return out
