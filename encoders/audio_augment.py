"""Training-time augmentation for the audio tower, so that level, position, pitch and background cannot stand
in for what a sound is: random gain, a random crop or offset inside the window, a small speed change (pitch
and length together), mixed-in noise of random colour and level, and SpecAugment's frequency and time masks
on the log-mel spectrogram. Used only while training; embedding never augments.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

GAIN_DB = (-18.0, 6.0)
SPEED_SEMITONES = 1.0  # up to ±1 semitone: pitch and length change together
NOISE_SNR_DB = (10.0, 40.0)


def place(wave: np.ndarray, size: int, rng: np.random.Generator, shift: bool) -> np.ndarray:
    """One window of ``size`` samples: a random crop of a longer sound; a shorter one padded with zeros, at a
    random offset when ``shift`` (else at the start, as embedding places it)."""
    if len(wave) >= size:
        start = int(rng.integers(0, len(wave) - size + 1))
        return np.asarray(wave[start:start + size], np.float32)
    out = np.zeros(size, np.float32)
    offset = int(rng.integers(0, size - len(wave) + 1)) if shift else 0
    out[offset:offset + len(wave)] = wave
    return out


def _speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (linear interpolation): pitch up and length down by the same ratio."""
    positions = np.arange(0, len(wave) - 1, factor)
    return np.interp(positions, np.arange(len(wave)), wave).astype(np.float32)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS noise with power ∝ 1/f^e, e drawn from 0 (white) to 2 (brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    out = np.fft.irfft(spectrum / f ** (rng.uniform(0, 2) / 2), n)
    return (out / (np.sqrt(np.mean(out ** 2)) + 1e-12)).astype(np.float32)


def perturb(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random speed change, then noise at a random signal-to-noise ratio, then a random gain."""
    wave = _speed(wave, 2 ** (rng.uniform(-SPEED_SEMITONES, SPEED_SEMITONES) / 12)) if len(wave) > 2 else wave
    rms = float(np.sqrt(np.mean(wave ** 2))) if len(wave) else 0.0
    if rms > 0:
        wave = wave + _noise(rng, len(wave)) * rms * 10 ** (-rng.uniform(*NOISE_SNR_DB) / 20)
    return (wave * 10 ** (rng.uniform(*GAIN_DB) / 20)).astype(np.float32)


def spec_augment(mel: torch.Tensor, generator: torch.Generator, masks: int = 2, max_freq: float = 0.15,
                 max_time: float = 0.15) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) on a (B, 1, mels, frames) log-mel batch: per example ``masks`` frequency
    bands and ``masks`` time spans, each up to the given fraction, set to the example's mean."""
    out = mel.clone()
    batch, _, n_mels, frames = mel.shape
    fill = mel.mean(dim=(2, 3), keepdim=True)
    for axis, size, fraction in ((2, n_mels, max_freq), (3, frames, max_time)):
        index = torch.arange(size).view(1, 1, -1, 1) if axis == 2 else torch.arange(size).view(1, 1, 1, -1)
        for _ in range(masks):
            width = (torch.rand(batch, generator=generator) * fraction * size).long()
            start = (torch.rand(batch, generator=generator) * (size - width + 1)).long()
            shape = (batch, 1, 1, 1)
            inside = (index >= start.view(shape)) & (index < (start + width).view(shape))
            out = torch.where(inside, fill, out)
    return out


@contextlib.contextmanager
def spec_augmented(tower: torch.nn.Module, generator: torch.Generator) -> Iterator[None]:
    """While inside, the tower masks its log-mel input (the input of its first layer, ``input_norm``)."""
    handle = tower.input_norm.register_forward_pre_hook(lambda _m, args: (spec_augment(args[0], generator),))
    try:
        yield
    finally:
        handle.remove()
