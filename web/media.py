"""Small pictures of indexed items, cached as files in the data dir.

Images get a JPEG thumbnail; sounds a waveform PNG (peak and RMS envelope against full scale). Cache files are named by
item id, file size and mtime, so a changed file gets a new picture and stale ones are simply unused.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmsearch.indexer.decode import DecodeError, decode_audio, decode_image
from mmsearch.errors import MMSearchError
from mmsearch.files import atomic_write
from mmsearch.search.tables import Item

WAVE_SIZE = (320, 64)
WAVE_RATE = 8000
WAVE_SECONDS = 120.0


class NoPicture(MMSearchError):
    """This item has no picture (a text note), or its file cannot be drawn."""


def cache_dir(data_path: Path) -> Path:
    folder = data_path / "thumbnails"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def picture(item: Item, settings: Any) -> tuple[Path, str]:
    """(cached file, mime type) of the item's thumbnail or waveform, made on first request, decoded under
    the same image limits as indexing (and reduced for a large picture: a thumbnail needs few pixels)."""
    data_path, size = settings.data_path, settings.thumbnail_size
    if item.modality == "image":
        name, mime = f"{item.id}-{item.size}-{item.mtime_ns}-{size}.jpg", "image/jpeg"
    elif item.modality == "audio":
        name, mime = f"{item.id}-{item.size}-{item.mtime_ns}-wave2.png", "image/png"
    else:
        raise NoPicture(f"item {item.id} is a {item.modality} item and has no thumbnail")
    target = cache_dir(data_path) / name
    if target.exists():
        return target, mime
    try:
        with open(item.path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise NoPicture(f"cannot read item {item.id}'s file: {exc.strerror or exc}") from None
    try:
        if item.modality == "image":
            image = decode_image(data, settings.max_image_pixels, settings.max_image_bytes, size,
                                 settings.max_image_aspect).image
            image.thumbnail((size, size))
            encoded = _encode(image, "JPEG", quality=82)
        else:
            encoded = _encode(waveform(decode_audio(data, WAVE_RATE, WAVE_SECONDS).wave), "PNG")
    except DecodeError as exc:
        raise NoPicture(f"item {item.id}: {exc}") from None
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(encoded))  # concurrent requests each write whole files
    return target, mime


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def waveform(wave: np.ndarray, size: tuple[int, int] = WAVE_SIZE) -> Image.Image:
    """Peak (light) and RMS (dark) envelope of a mono wave in [-1, 1], one column per pixel, on a
    transparent background, against full scale rather than the file's own peak: a quiet sound draws
    small and a loud one tall, quiet and loud parts of one sound differ, and a steady tone is an even
    band around the centre line instead of a box filling the picture."""
    width, height = size
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    mid = (height - 1) / 2
    draw.line([(0, mid), (width - 1, mid)], fill=(37, 99, 235, 110))
    if wave.size == 0:
        return image
    wave = np.clip(np.nan_to_num(wave.astype(np.float32)), -1.0, 1.0)
    columns = np.array_split(wave, min(width, wave.size))
    reach = mid * 0.95
    step = width / len(columns)
    for x, column in enumerate(columns):
        left, right = int(x * step), max(int(x * step), int((x + 1) * step) - 1)
        low, high = float(column.min()), float(column.max())
        rms = min(float(np.sqrt(np.mean(np.square(column, dtype=np.float64)))), high, -low)
        draw.rectangle([left, round(mid - high * reach), right, round(mid - low * reach)], fill=(147, 176, 243, 255))
        if rms > 0:
            draw.rectangle([left, round(mid - rms * reach), right, round(mid + rms * reach)], fill=(37, 99, 235, 255))
    return image
