"""Turn file bytes into model-ready content plus metadata, or a one-line reason why not.

Sounds can also be read from a path, so a long recording is hashed and decoded in pieces."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import av
import charset_normalizer
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

HASH = "blake2b"
# Pillow guards against bombs itself; we refuse earlier, at our own limit, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None
_EXIF_DATETIME_ORIGINAL, _EXIF_DATETIME, _EXIF_IFD = 0x9003, 0x0132, 0x8769


class DecodeError(Exception):
    """The file is broken or not what its extension says; the message is stored as the reason."""


@dataclass
class Decoded:
    meta: dict[str, Any] = field(default_factory=dict)
    image: Image.Image | None = None
    text: str | None = None
    wave: "np.ndarray | None" = None


def content_hash(data: bytes) -> str:
    return f"{HASH}:" + hashlib.blake2b(data, digest_size=20).hexdigest()


def file_hash(path: str) -> str:
    """content_hash of a file's bytes, read in pieces (raises OSError)."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=20))
    return f"{HASH}:" + digest.hexdigest()


def _open_audio(source: bytes | str):
    """A PyAV container over in-memory bytes or a file path; empty input is refused first."""
    if not (os.path.getsize(source) if isinstance(source, str) else source):
        raise DecodeError("empty file")
    return av.open(source if isinstance(source, str) else io.BytesIO(source))


def decode(modality: str, data: bytes, path: str, max_image_pixels: int, max_text_chars: int) -> Decoded:
    if not data:
        raise DecodeError("empty file")
    if modality == "image":
        return decode_image(data, max_image_pixels)
    if modality == "text":
        return decode_text(data, max_text_chars)
    if modality == "audio":
        return probe_audio(data)
    raise DecodeError(f"unsupported modality {modality}")


def decode_image(data: bytes, max_pixels: int) -> Decoded:
    """RGB image with EXIF orientation applied and transparency flattened onto white."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise DecodeError(f"image too large: {width}x{height} exceeds {max_pixels} pixels "
                                  f"(possible decompression bomb)")
            image.load()
            taken_at = _exif_time(image)
            mime = image.get_format_mimetype() if hasattr(image, "get_format_mimetype") else None
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"cannot decode image: {_reason(exc)}") from None
    meta = {"mime": mime, "width": image.width, "height": image.height, "taken_at": taken_at}
    return Decoded(meta=meta, image=image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _stretch_to_8bit(image)  # 16-bit or float greyscale would clip to white
    return image.convert("RGB") if image.mode != "RGB" else image


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(np.nan_to_num((values - low) * scale).astype(np.uint8), "L")


def _exif_time(image: Image.Image) -> dt.datetime | None:
    try:
        exif = image.getexif()
        value = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL) or exif.get(_EXIF_DATETIME)
        return dt.datetime.strptime(str(value).strip("\x00 "), "%Y:%m:%d %H:%M:%S") if value else None
    except (ValueError, TypeError, OSError, AttributeError):
        return None


# EBCDIC pages "fit" short Latin-1 byte strings but no note on a personal disk uses them.
_MAINFRAME_CODEPAGES = ["cp037", "cp273", "cp424", "cp500", "cp875", "cp1026", "cp1140"]


def decode_text(data: bytes, max_chars: int) -> Decoded:
    """UTF-8 first, then charset detection; NUL bytes or undetectable encodings mean binary."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DecodeError("binary content, not text")
    try:
        text = data.decode("utf-8-sig")
        encoding = "utf-8"
    except UnicodeDecodeError:
        results = charset_normalizer.from_bytes(data, cp_exclusion=_MAINFRAME_CODEPAGES)
        best = results.best()
        if best is None:
            raise DecodeError("binary content or unknown text encoding") from None
        # Detection ranks close Western encodings near each other; prefer cp1252 when it reads as well.
        western = next((m for m in results if m.encoding in ("cp1252", "latin_1", "iso8859_15")), None)
        if western is not None and western.chaos <= best.chaos + 0.1:
            best = western
        text, encoding = str(best), best.encoding
    text = text.strip()
    if not text:
        raise DecodeError("empty text")
    return Decoded(meta={"mime": "text/plain", "encoding": encoding}, text=text[:max_chars])


def probe_audio(source: bytes | str) -> Decoded:
    """Duration, sample rate and channels from the first audio stream (PyAV) of bytes or a file."""
    try:
        with _open_audio(source) as container:
            streams = container.streams.audio
            if not streams:
                raise DecodeError("no audio stream")
            stream = streams[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            decoded_any = next(container.decode(stream), None) is not None
            meta = {"mime": _audio_mime(container.format.name), "duration": duration,
                    "sample_rate": stream.codec_context.sample_rate,
                    "channels": stream.codec_context.channels}
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise DecodeError(f"cannot decode audio: {_reason(exc)}") from None
    if not decoded_any:
        raise DecodeError("audio stream has no decodable frames")
    return Decoded(meta=meta)


_AUDIO_MIMES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg",
                "mov,mp4,m4a,3gp,3g2,mj2": "audio/mp4", "opus": "audio/ogg", "matroska,webm": "audio/x-matroska",
                "avi": "video/x-msvideo"}


def _audio_mime(format_name: str) -> str:
    return _AUDIO_MIMES.get(format_name, f"audio/{format_name.split(',')[0]}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror  # without errno and the '<none>' file name of an in-memory container
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def decode_audio(source: bytes | str, sample_rate: int, max_seconds: float) -> Decoded:
    """Mono float32 waveform at ``sample_rate`` (first ``max_seconds`` only) plus the file's metadata."""
    probed = probe_audio(source)
    limit = int(sample_rate * max_seconds)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    have = 0
    try:
        with _open_audio(source) as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    have += chunks[-1].size
                if have >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, OSError, ValueError) as exc:
        if not chunks:  # a damaged tail after good audio still indexes what decoded
            raise DecodeError(f"cannot decode audio: {_reason(exc)}") from None
    # "flt" frames are float32 already: no extra copy of up to max_seconds of sound
    wave = np.concatenate(chunks)[:limit].astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    chunks.clear()  # the frames go before the checks, so at most two copies are ever alive
    if wave.size == 0:
        raise DecodeError("audio stream decodes to no samples")
    if max(float(wave.max()), -float(wave.min())) < 1e-4:  # np.abs would allocate a third copy
        raise DecodeError("silent audio")
    probed.wave = wave
    decoded = len(wave) / sample_rate
    header = probed.meta.get("duration")
    if header is None or (len(wave) < limit and decoded < header - 0.5):
        probed.meta["duration"] = decoded  # the whole stream decoded short of its header: a cut-off file
    return probed
