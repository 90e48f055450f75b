"""Generated media collections for tests: varied, deterministic, and with known expected counts."""
from __future__ import annotations

import fractions
import io
import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
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


def encode(container: str, audio_codec: str | None, rate: int, samples: np.ndarray | None, channels: int = 1,
           options: dict | None = None, video_codec: str | None = None, seconds: float | None = None) -> bytes:
    """A file made by PyAV: an audio stream of ``samples`` (mono, repeated on every channel) and, with
    ``video_codec``, a small video stream in the same container. ``audio_codec`` None: video only."""
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        video = None
        if video_codec:
            video = out.add_stream(video_codec, rate=10)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        if audio_codec:
            stream = out.add_stream(audio_codec, rate=rate, layout=layout)
            if options:
                stream.options = options
            fmt = av.AudioFormat(stream.codec_context.codec.audio_formats[0].name)
            step = stream.codec_context.frame_size or 1024
            for start in range(0, len(samples), step):
                chunk = samples[start:start + step]
                if fmt.name.startswith("s16"):
                    chunk = (chunk * 32767).astype(np.int16)
                elif fmt.name.startswith("s32"):
                    chunk = (chunk * 2 ** 31 * 0.99).astype(np.int32)
                else:
                    chunk = chunk.astype(np.float32)
                chunk = np.tile(chunk, (channels, 1)) if fmt.is_planar else np.repeat(chunk, channels).reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(chunk, format=fmt.name, layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = rate, start, fractions.Fraction(1, rate)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        if video is not None:
            length = seconds if seconds is not None else len(samples) / rate
            for i in range(max(1, int(length * 10))):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 25) % 256, np.uint8), format="rgb24")
                frame.pts = i
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
    return buffer.getvalue()


def codec(*names: str) -> str:
    """The first of ``names`` this PyAV build can encode with."""
    for name in names:
        try:
            av.Codec(name, "w")
        except Exception:
            continue
        return name
    pytest.fail(f"no encoder among {names} in this PyAV build: the tests need PyAV's wheels, which carry them")
