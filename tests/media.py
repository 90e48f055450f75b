"""Generated media collections for tests: varied, deterministic, and with known expected counts."""
from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


def picture(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, COLOURS[seed % len(COLOURS)])
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        draw.ellipse((x0, y0, x0 + size[0] // 3, y0 + size[1] // 3), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def tone_wav(path: Path, freq: float = 440.0, seconds: float = 0.5, rate: int = 16000) -> None:
    samples = (np.sin(2 * math.pi * freq * np.arange(int(rate * seconds)) / rate) * 12000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def make_collection(root: Path) -> dict:
    """Images in several formats, notes, a caption sidecar, audio, broken and hidden files.
    Returns what a correct index of it must report."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub dir").mkdir()
    (root / ".hidden").mkdir()
    picture(0).save(root / "red.jpg")
    picture(1).save(root / "green.png")
    picture(2).save(root / "sub dir" / "blue.webp")
    picture(3).save(root / "sub dir" / "yellow.bmp")
    picture(4).save(root / "purple.gif")
    picture(5).save(root / "orange.tiff")
    picture(6).save(root / "café.jpeg")
    (root / "red.txt").write_text("a red picture with round shapes")  # caption of red.jpg
    (root / "note.md").write_text("# Groceries\nmilk, eggs and a loaf of bread")
    (root / "sub dir" / "poem.txt").write_text("the sea was calm under a grey sky")
    (root / "latin1.txt").write_bytes("crème brûlée à la française, très délicieuse et sucrée".encode("latin-1"))
    tone_wav(root / "beep.wav")
    # broken
    (root / "empty.jpg").write_bytes(b"")
    (root / "notanimage.png").write_text("this is text pretending to be a png")
    buffer = io.BytesIO()
    picture(7, (256, 256)).save(buffer, "JPEG")
    (root / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    # hidden: never indexed
    picture(8).save(root / ".secret.jpg")
    picture(9).save(root / ".hidden" / "inside.png")
    return {"image": 7, "text": 3, "audio": 1, "failed": 4, "captioned": {"red.jpg": "a red picture with round shapes"}}
