"""Small pictures of indexed items, cached as files in the data dir.

Images get a JPEG thumbnail; sounds a waveform PNG (min/max envelope). Cache files are named by
item id, file size and mtime, so a changed file gets a new picture and stale ones are simply unused.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from indexer.decode import DecodeError, decode_audio, decode_image
from mmsearch.errors import MMSearchError
from search.store import Item

WAVE_SIZE = (320, 64)
WAVE_RATE = 8000
WAVE_SECONDS = 120.0


class NoPicture(MMSearchError):
    """This item has no picture (a text note), or its file cannot be drawn."""


def cache_dir(data_path: Path) -> Path:
    folder = data_path / "thumbnails"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def picture(item: Item, data_path: Path, size: int, max_pixels: int) -> tuple[Path, str]:
    """(cached file, mime type) of the item's thumbnail or waveform, made on first request."""
    if item.modality == "image":
        name, mime = f"{item.id}-{item.size}-{item.mtime_ns}-{size}.jpg", "image/jpeg"
    elif item.modality == "audio":
        name, mime = f"{item.id}-{item.size}-{item.mtime_ns}-wave1.png", "image/png"
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
            image = decode_image(data, max_pixels).image
            image.thumbnail((size, size))
            encoded = _encode(image, "JPEG", quality=82)
        else:
            encoded = _encode(waveform(decode_audio(data, WAVE_RATE, WAVE_SECONDS).wave), "PNG")
    except DecodeError as exc:
        raise NoPicture(f"item {item.id}: {exc}") from None
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as out:
        out.write(encoded)
    os.replace(tmp, target)  # concurrent requests for the same picture each write whole files
    return target, mime


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def waveform(wave: np.ndarray, size: tuple[int, int] = WAVE_SIZE) -> Image.Image:
    """Min/max envelope of a mono wave, one column per pixel, on a transparent background."""
    width, height = size
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    if wave.size == 0:
        return image
    columns = np.array_split(wave, min(width, wave.size))
    peak = float(np.abs(wave).max()) or 1.0
    mid = (height - 1) / 2
    reach = mid * 0.9
    draw.line([(0, mid), (width - 1, mid)], fill=(37, 99, 235, 90))
    scale = len(columns) / width
    for x, column in enumerate(columns):
        low, high = float(column.min()) / peak, float(column.max()) / peak
        px = int(x / scale)
        draw.line([(px, mid - high * reach), (px, mid - low * reach)], fill=(37, 99, 235, 255))
    return image
