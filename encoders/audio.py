"""Audio tower: log-mel spectrogram, a small ResNet-style CNN, a projection into the image/text space.

Sounds longer than one window are cut into windows whose embeddings are averaged and re-normalised,
so memory is bounded by the window batch, not by the length of the sound.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsearch.files import atomic_write

RANDOM_SEED = 0


@dataclass(frozen=True)
class AudioConfig:
    embed_dim: int
    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 64
    window_seconds: float = 4.0
    widths: tuple[int, ...] = (32, 64, 128, 256)

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.window_seconds)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AudioConfig":
        values = json.loads(text)
        values["widths"] = tuple(values["widths"])
        return cls(**values)


def default_config(embed_dim: int, small: bool = False) -> AudioConfig:
    """The tower matching an image/text space; ``small`` is the tiny preset's."""
    if small:
        return AudioConfig(embed_dim, n_mels=32, window_seconds=2.0, widths=(16, 32, 64))
    return AudioConfig(embed_dim)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class AudioTower(nn.Module):
    """Waveforms (B, samples) at ``config.sample_rate`` to L2-normalised (B, embed_dim) vectors."""

    def __init__(self, config: AudioConfig):
        super().__init__()
        import librosa.filters  # the reference mel filterbank; imported only when a tower is built
        self.config = config
        mel = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels)
        self.register_buffer("mel", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.input_norm = nn.BatchNorm2d(1)
        self.stem = nn.Sequential(nn.Conv2d(1, config.widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(config.widths[0]), nn.ReLU())
        widths = (config.widths[0],) + tuple(config.widths)
        self.blocks = nn.Sequential(*[_Block(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.proj = nn.Linear(2 * config.widths[-1], config.embed_dim)

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(waves.float(), self.config.n_fft, self.config.hop_length, window=self.window,
                          return_complex=True).abs().pow(2)
        return torch.log(self.mel @ spec + 1e-6).unsqueeze(1)  # (B, 1, mels, frames)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.input_norm(self.log_mel(waves))))
        x = x.mean(dim=2)  # over frequency
        pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)  # over time: average and peak
        return F.normalize(self.proj(pooled), dim=-1)


def build_tower(config: AudioConfig, seed: int = RANDOM_SEED) -> AudioTower:
    """A tower with deterministic initial weights: the same in every process for the same config."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AudioTower(config)


def window_count(samples: int, config: AudioConfig) -> int:
    return max(1, -(-samples // config.window_samples))


def window(wave: np.ndarray, index: int, config: AudioConfig) -> np.ndarray:
    """Window ``index`` of a mono waveform; the last is zero-padded (a short sound is one window)."""
    size = config.window_samples
    piece = wave[index * size:(index + 1) * size]
    if len(piece) == size:
        return piece
    padded = np.zeros(size, np.float32)
    padded[: len(piece)] = piece
    return padded


def windows(wave: np.ndarray, config: AudioConfig) -> np.ndarray:
    """All windows of a waveform as one (count, window_samples) array."""
    return np.stack([window(wave, i, config) for i in range(window_count(len(wave), config))])


class AudioEncoder:
    """Embeds whole sounds: window, encode in bounded batches, mean-pool, re-normalise."""

    def __init__(self, tower: AudioTower, device: torch.device, identity: dict, window_batch: int = 32):
        self.tower = tower.to(device).eval()
        self.device = device
        self.identity = identity
        self.config = tower.config
        self.dim = tower.config.embed_dim
        self.window_batch = window_batch

    def encode_waves(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """One vector per sound: its windows' mean, re-normalised."""
        return np.stack([sound.vector for sound in self.embed_waves(waves)]) if len(waves) else \
            np.zeros((0, self.dim), np.float32)

    def embed_waves(self, waves: Sequence[np.ndarray]) -> list[EmbeddedSound]:
        """Each sound's vector and, for a sound longer than one window, each window's as its segments.
        Windows of all the sounds share tower batches (short sounds fill them together); only one batch of
        windows is ever copied, so memory does not grow with the length of a sound."""
        counts = [window_count(len(wave), self.config) for wave in waves]
        each = [np.zeros((n, self.dim), np.float32) for n in counts]
        pending = [(row, i) for row, n in enumerate(counts) for i in range(n)]
        with torch.inference_mode():
            for start in range(0, len(pending), self.window_batch):
                chunk = pending[start:start + self.window_batch]
                batch = torch.from_numpy(np.stack([window(waves[row], i, self.config) for row, i in chunk]))
                embedded = self.tower(batch.to(self.device)).float().cpu().numpy()
                for (row, i), vector in zip(chunk, embedded):
                    each[row][i] = vector
        out = []
        for wave, vectors in zip(waves, each):
            total = vectors.sum(axis=0, dtype=np.float64)
            pooled = (total / max(np.linalg.norm(total), 1e-12)).astype(np.float32)
            seconds = len(wave) / self.config.sample_rate
            spans = [(i * self.config.window_seconds, min((i + 1) * self.config.window_seconds, seconds))
                     for i in range(len(vectors))] if len(vectors) > 1 else []
            out.append(EmbeddedSound(pooled, vectors if spans else vectors[:0], spans))
        return out


@dataclass
class EmbeddedSound:
    """A sound's vector, and its segments (one per window, with start and end in seconds) when it is
    longer than one window."""

    vector: np.ndarray
    segments: np.ndarray
    spans: list[tuple[float, float]]


# --- checkpoints ----------------------------------------------------------------------------------
def save_tower(tower: AudioTower, path: Path, extra: dict | None = None) -> None:
    """safetensors weights; the config (and training facts) ride in the header metadata."""
    from safetensors.torch import save_file
    metadata = {"config": tower.config.to_json(), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    state = {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def load_tower(path: Path) -> tuple[AudioTower, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mmsearch.errors import ModelLoadError, first_line
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        config = AudioConfig.from_json(metadata["config"])
        tower = AudioTower(config)
        tower.load_state_dict(load_file(str(path)))
    except FileNotFoundError:
        raise ModelLoadError(f"audio checkpoint {path} does not exist") from None
    except Exception as exc:  # safetensors and state-dict errors come in many types
        raise ModelLoadError(f"cannot load audio checkpoint {path}: {first_line(exc, 160)}") from None
    return tower, {k: v for k, v in metadata.items() if k != "config"}
