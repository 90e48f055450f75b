"""Turn file bytes into model-ready content plus metadata, or a one-line reason why not.

Images (indexer/images.py) are decoded under a memory budget in bytes; sounds (indexer/sounds.py) only
from the containers listed there, and also from a path, so a long recording is hashed and decoded in
pieces. Every file is treated as hostile."""
from __future__ import annotations

import hashlib

import charset_normalizer

from .decoded import Decoded, DecodeError
from .images import MAX_ASPECT, MAX_BYTES, decode_image, model_input_side
from .sounds import decode_audio, probe_audio

__all__ = ["Decoded", "DecodeError", "content_hash", "decode", "decode_audio", "decode_image", "decode_text",
           "file_hash", "model_input_side", "probe_audio"]
HASH = "blake2b"


def content_hash(data: bytes) -> str:
    return f"{HASH}:" + hashlib.blake2b(data, digest_size=20).hexdigest()


def file_hash(path: str) -> str:
    """content_hash of a file's bytes, read in pieces (raises OSError)."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=20))
    return f"{HASH}:" + digest.hexdigest()


def decode(modality: str, data: bytes, path: str, max_image_pixels: int, max_text_chars: int, *,
           max_image_bytes: int = MAX_BYTES, max_image_aspect: float = MAX_ASPECT, model_side: int = 0) -> Decoded:
    """Content and metadata of a file's bytes; images under the byte budget (see indexer/images.py)."""
    if not data:
        raise DecodeError("empty file")
    if modality == "image":
        return decode_image(data, max_image_pixels, max_image_bytes, model_side, max_image_aspect)
    if modality == "text":
        return decode_text(data, max_text_chars)
    if modality == "audio":
        return probe_audio(data)
    raise DecodeError(f"unsupported modality {modality}")


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
