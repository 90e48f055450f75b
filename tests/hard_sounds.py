"""A generated set of the hard kind (issue #14): eight instruments whose captions differ by one word and whose
sounds differ by timbre only — harmonic profile, envelope, inharmonicity, breath or bow noise — never by pitch,
loudness or length, which are drawn from the same ranges for every class. Training and held-out sounds use
disjoint pitches and durations, so a tower that keys on pitch or length cannot pass.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .sounds import RATE, write_wav

INSTRUMENTS = ("flute", "violin", "clarinet", "piano", "horn", "bell", "harp", "trumpet")
CAPTIONS = {name: f"a note played on a {name}" for name in INSTRUMENTS}
# MIDI notes: training on even ones, held out on the odd ones in between (never trained on).
TRAIN_NOTES = tuple(range(46, 84, 2))
HELD_OUT_NOTES = tuple(range(47, 83, 2))
TRAIN_SECONDS = (0.7, 1.1, 1.5, 1.9)
HELD_OUT_SECONDS = (0.9, 1.3, 1.7)


def _hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _coloured_noise(rng, n: int, exponent: float) -> np.ndarray:
    """Noise with power ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit peak."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
    out = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return out / (np.abs(out).max() + 1e-9)


def _band(rng, n: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(f < low) | (f > high)] = 0
    out = np.fft.irfft(spectrum, n)
    return out / (np.abs(out).max() + 1e-9)


def _partials(t, f0, ratios, amplitudes, decays=None, vibrato=(0.0, 0.0), rng=None):
    """Sum of partials at f0·ratio, each with its amplitude and (optional) exponential decay rate."""
    rate, depth = vibrato
    phase_mod = depth / max(rate, 1e-9) * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3)) if depth else 0.0
    out = np.zeros_like(t)
    for k, (ratio, amp) in enumerate(zip(ratios, amplitudes)):
        freq = f0 * ratio
        if freq >= RATE / 2 - 200:
            break
        partial = amp * np.sin(2 * np.pi * freq * t + ratio * phase_mod + rng.uniform(0, 6.3))
        if decays is not None:
            partial *= np.exp(-decays[k] * t)
        out += partial
    return out


def _envelope(t, attack: float, release: float = 0.05) -> np.ndarray:
    env = np.minimum(1.0, t / max(attack, 1e-4))
    return env * np.clip((t[-1] - t) / release, 0, 1)


def _instrument(name: str, rng, t: np.ndarray, f0: float) -> np.ndarray:
    n = np.arange(1, 31)
    if name == "flute":  # nearly a sine, soft attack, breath noise, gentle vibrato
        tone = _partials(t, f0, n, [1, 0.25, 0.08, 0.03], vibrato=(5, 0.004 * f0), rng=rng)
        return _envelope(t, 0.09) * (tone + 0.12 * _band(rng, t.size, 2000, 7000))
    if name == "violin":  # every harmonic (1/n, sawtooth-like), strong vibrato, bow noise
        tone = _partials(t, f0, n, 1.0 / n, vibrato=(6, 0.012 * f0), rng=rng)
        return _envelope(t, 0.06) * (tone + 0.05 * _coloured_noise(rng, t.size, 1.0))
    if name == "clarinet":  # odd harmonics only, steady
        return _envelope(t, 0.03) * _partials(t, f0, n, np.where(n % 2 == 1, 1.0 / n, 0.0), rng=rng)
    if name == "piano":  # hammer attack, higher partials decay faster, slightly stretched
        ratios = n * np.sqrt(1 + 0.0004 * n ** 2)
        tone = _partials(t, f0, ratios, 1.0 / n ** 1.2, decays=1.5 + 0.8 * n, rng=rng)
        click = _band(rng, t.size, 1000, 6000) * np.exp(-t * 120)
        return _envelope(t, 0.003) * (tone + 0.3 * click)
    if name == "horn":  # mellow brass: harmonics falling off fast, slow swell, no formant
        swell = 1 - 0.6 * np.exp(-t * 5)
        return _envelope(t, 0.12) * swell * _partials(t, f0, n, np.exp(-n / 2.5), vibrato=(4, 0.002 * f0), rng=rng)
    if name == "bell":  # inharmonic partials, strike, long ringing decay
        ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.74, 3.0, 4.2])
        decays = np.array([0.8, 1.2, 1.8, 2.0, 2.8, 3.5, 4.0, 6.0])
        return _envelope(t, 0.002) * _partials(t, f0, ratios, [0.6, 1, 0.7, 0.5, 0.6, 0.4, 0.3, 0.3], decays, rng=rng)
    if name == "harp":  # plucked string: bright start that decays fast to a nearly pure tone
        return _envelope(t, 0.002) * _partials(t, f0, n, 1.0 / n ** 2, decays=4 + 3.0 * n, rng=rng)
    if name == "trumpet":  # harmonics under a formant around 1.2–1.6 kHz, brassy swell at the start
        formant = rng.uniform(1200, 1600)
        amps = np.exp(-((n * f0 - formant) / 700.0) ** 2) + 0.15 / n
        brightness = 1 - 0.5 * np.exp(-t * 12)
        return _envelope(t, 0.04) * brightness * _partials(t, f0, n, amps, vibrato=(5, 0.003 * f0), rng=rng)
    raise KeyError(name)


def _room(rng, signal: np.ndarray) -> np.ndarray:
    """What every recording goes through whatever the instrument: a random tilt of the spectrum (microphone,
    distance) and a random short reverb."""
    n = signal.size
    spectrum = np.fft.rfft(signal)
    f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 50.0)
    spectrum *= (f / 1000.0) ** rng.uniform(-0.6, 0.4)
    dry = np.fft.irfft(spectrum, n)
    length = int(RATE * rng.uniform(0.05, 0.3))
    tail = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 5))
    wet = np.convolve(dry, tail)[:n]
    wet *= np.abs(dry).max() / (np.abs(wet).max() + 1e-9)
    return dry + rng.uniform(0.0, 0.5) * wet


def note(name: str, midi: float, seconds: float, seed: int) -> np.ndarray:
    """One note: the instrument at this pitch and length through a random room, at a random level, in quiet
    noise of random colour."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    signal = _room(rng, _instrument(name, rng, t, _hz(midi + rng.uniform(-0.2, 0.2))))
    signal = signal / (np.abs(signal).max() + 1e-9) * rng.uniform(0.1, 1.0)
    return signal + rng.uniform(0.003, 0.03) * _coloured_noise(rng, t.size, rng.uniform(0, 2))


def make_split(root: Path, notes, durations, per_class: int, seed: int) -> Path:
    """WAV files and a manifest.csv (audio,caption) of ``per_class`` notes per instrument, pitch and
    duration cycling through ``notes`` and ``durations`` (shuffled per class), unnormalised."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(INSTRUMENTS):
        pitches = rng.permutation(np.resize(notes, per_class))
        lengths = rng.permutation(np.resize(durations, per_class))
        for i in range(per_class):
            path = f"{name}_{i:03d}.wav"
            write_wav(root / path, note(name, pitches[i], lengths[i], seed * 100_000 + c * 1000 + i), normalise=False)
            rows.append({"audio": path, "caption": CAPTIONS[name]})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["audio", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def make_hard_sets(root: Path, per_class: int = 10, held_out_per_class: int = 5) -> tuple[Path, Path]:
    """(training manifest, held-out manifest): disjoint pitches and durations, different seeds."""
    train = make_split(root / "train", TRAIN_NOTES, TRAIN_SECONDS, per_class, seed=1)
    held = make_split(root / "held", HELD_OUT_NOTES, HELD_OUT_SECONDS, held_out_per_class, seed=2)
    return train, held
