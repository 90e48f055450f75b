"""Facts about modalities, in one place: their names, the file extensions of each, and the caption rule.

Imported by the indexer (what a file is), the search engine (what a filter or a space may name), the
web API (uploads) and the CLI (choices), so that none of them spells these out again.
"""
from __future__ import annotations

import os
from typing import Iterable

IMAGE, AUDIO, TEXT = "image", "audio", "text"
MODALITIES = (IMAGE, AUDIO, TEXT)
MEDIA = (IMAGE, AUDIO)  # modalities whose files can carry a caption sidecar

EXTENSIONS: dict[str, frozenset[str]] = {
    IMAGE: frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                      ".heic", ".heif", ".avif",  # pillow-heif; Pillow's own AVIF plugin
                      ".dng", ".cr2", ".nef", ".arw"}),  # camera RAW through LibRaw (rawpy)
    AUDIO: frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".opus",
                      # the sound track of video containers; a video without one fails "no audio stream"
                      ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}),
    TEXT: frozenset({".txt", ".md"}),
}
CAPTION_EXT = ".txt"


def modality_of(path: str) -> str | None:
    """The modality a file name's extension says, or None for a file mmsearch does not index."""
    ext = os.path.splitext(path)[1].lower()
    return next((m for m in MODALITIES if ext in EXTENSIONS[m]), None)


def captions(names: Iterable[str]) -> dict[str, str]:
    """The caption rule, over the file names of one folder: ``x.txt`` beside ``x.jpg`` (or any image or
    sound ``x.*``) is that file's caption, not a note of its own. Returns media name -> caption name."""
    names = list(names)
    sidecars = {os.path.splitext(n)[0]: n for n in names if os.path.splitext(n)[1].lower() == CAPTION_EXT}
    return {n: sidecars[os.path.splitext(n)[0]] for n in names
            if modality_of(n) in MEDIA and os.path.splitext(n)[0] in sidecars}


def sidecar_of(path: str) -> str | None:
    """The caption file of the image or sound at ``path``, if there is one on disk."""
    candidate = os.path.splitext(path)[0] + CAPTION_EXT
    if not os.path.isfile(candidate):
        return None
    name = captions([os.path.basename(path), os.path.basename(candidate)]).get(os.path.basename(path))
    return os.path.join(os.path.dirname(path), name) if name else None


def check(modality: str) -> str:
    """A modality name from a user, or an error that lists the valid ones."""
    from .errors import MMSearchError
    if modality not in MODALITIES:
        raise MMSearchError(f"unknown modality {str(modality)[:40]!r}: use {', '.join(MODALITIES)}")
    return modality
