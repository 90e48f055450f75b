"""What decoding returns: content plus metadata, or a DecodeError whose message is stored as the reason."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from mmsearch.errors import first_line


class DecodeError(Exception):
    """The file is broken or not what its extension says; the message is stored as the reason."""


@dataclass
class Decoded:
    meta: dict[str, Any] = field(default_factory=dict)
    image: Image.Image | None = None
    text: str | None = None
    wave: "np.ndarray | None" = None


def reason(exc: BaseException) -> str:
    """One line for a library exception, without file names or errno."""
    strerror = getattr(exc, "strerror", None)
    if strerror and type(exc).__module__.startswith("av"):
        return strerror  # without errno and the '<none>' file name of an in-memory container
    return first_line(exc)
