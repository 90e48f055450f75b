"""Generated sound classes, each with a caption that says what it is, and a picture for some."""
from __future__ import annotations

import csv
import wave
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

RATE = 16_000


def _tone(rng, t, low, high):
    return np.sin(2 * np.pi * rng.uniform(low, high) * t)


def _sweep(rng, t, start, end):
    f0, f1 = start * rng.uniform(0.9, 1.1), end * rng.uniform(0.9, 1.1)
    return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1])))


def _pulses(rng, t, rate_low, rate_high, freq, decay):
    out = np.zeros_like(t)
    period = 1 / rng.uniform(rate_low, rate_high)
    for start in np.arange(rng.uniform(0, period), t[-1], period):
        tail = t[t >= start] - start
        out[t >= start] += np.exp(-tail * decay) * np.sin(2 * np.pi * freq * tail)
    return out


def _chirps(rng, t):
    out = np.zeros_like(t)
    for start in rng.uniform(0, t[-1] - 0.06, 8):
        mask = (t >= start) & (t < start + 0.05)
        local = t[mask] - start
        out[mask] += np.sin(2 * np.pi * (3000 * local + 20000 * local ** 2)) * np.hanning(mask.sum())
    return out


CLASSES: dict[str, Callable] = {
    "a low pitched hum": lambda rng, t: _tone(rng, t, 90, 140),
    "a high whistle": lambda rng, t: _tone(rng, t, 2500, 3500),
    "a bright major chord": lambda rng, t: sum(_tone(rng, t, f * 0.97, f * 1.03) for f in (330, 415, 494)) / 3,
    "hissing white noise": lambda rng, t: rng.normal(0, 0.5, t.size),
    "fast clicking": lambda rng, t: _pulses(rng, t, 10, 14, 3000, 400),
    "a slow heavy drum beat": lambda rng, t: _pulses(rng, t, 1.5, 2.5, 70, 12),
    "a rising siren": lambda rng, t: _sweep(rng, t, 400, 1600),
    "a falling whistle": lambda rng, t: _sweep(rng, t, 2000, 500),
    "a buzzing square wave": lambda rng, t: np.sign(_tone(rng, t, 200, 300)),
    "birds chirping": lambda rng, t: _chirps(rng, t),
}
# Pictures for some classes only: audio→image is checked where pairs had one.
PICTURES = {
    "a low pitched hum": ("navy", "stripes"),
    "hissing white noise": ("grey", "dots"),
    "fast clicking": ("yellow", "grid"),
    "a rising siren": ("red", "triangle"),
    "birds chirping": ("green", "circles"),
    "a slow heavy drum beat": ("brown", "square"),
}


def write_wav(path: Path, samples: np.ndarray, normalise: bool = True) -> None:
    """16-bit mono; ``normalise``: peak at 0.8 (else the samples are written as they are, clipped to ±1)."""
    samples = samples / (np.abs(samples).max() + 1e-9) * 0.8 if normalise else np.clip(samples, -1, 1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((samples * 32767).astype("<i2").tobytes())


def sound(caption: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * rng.uniform(1.5, 2.5))) / RATE
    signal = CLASSES[caption](rng, t) * rng.uniform(0.3, 1.0)
    return signal + rng.normal(0, 0.02, t.size)


def picture(caption: str, path: Path) -> None:
    colour, pattern = PICTURES[caption]
    image = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(image)
    if pattern == "stripes":
        for x in range(0, 96, 16):
            draw.rectangle((x, 0, x + 7, 95), fill=colour)
    elif pattern == "dots":
        for x in range(6, 96, 14):
            for y in range(6, 96, 14):
                draw.ellipse((x, y, x + 5, y + 5), fill=colour)
    elif pattern == "grid":
        for v in range(0, 96, 12):
            draw.line((v, 0, v, 95), fill=colour, width=3)
            draw.line((0, v, 95, v), fill=colour, width=3)
    elif pattern == "triangle":
        draw.polygon([(48, 5), (90, 90), (6, 90)], fill=colour)
    elif pattern == "circles":
        for r in range(44, 0, -12):
            draw.ellipse((48 - r, 48 - r, 48 + r, 48 + r), outline=colour, width=5)
    else:
        draw.rectangle((16, 16, 80, 80), fill=colour)
    image.save(path)


def make_training_set(root: Path, per_class: int, seed: int = 0) -> Path:
    """WAV files, pictures and a manifest.csv with columns audio,caption,image (paths relative)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, caption in enumerate(CLASSES):
        image = ""
        if caption in PICTURES:
            image = f"class{c}.png"
            picture(caption, root / image)
        for i in range(per_class):
            name = f"class{c}_{i:03d}.wav"
            write_wav(root / name, sound(caption, seed * 100_000 + c * 1000 + i))
            rows.append({"audio": name, "caption": caption, "image": image})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["audio", "caption", "image"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
