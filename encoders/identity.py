"""How a model is named in the data dir, without importing torch."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

RANDOM = "random"


@dataclass(frozen=True)
class ModelSpec:
    """What identifies an image/text model: the open_clip config and where its weights come from."""

    name: str
    pretrained: str  # an open_clip tag, 'random', or an absolute checkpoint path
    dim: int

    @property
    def is_file(self) -> bool:
        return self.pretrained not in (RANDOM,) and os.sep in self.pretrained

    def identity(self) -> dict:
        """What the data dir records. A file is named by its checksum so renaming it changes nothing."""
        source = {"checksum": file_checksum(self.pretrained)} if self.is_file else {"pretrained": self.pretrained}
        return {"name": self.name, **source, "dim": self.dim}


def file_checksum(path: str) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def encoder_key(identity: dict) -> str:
    """Short stable label stored beside every vector this model produced."""
    source = identity.get("pretrained") or identity["checksum"][:23]
    return f"{identity['name']}/{source}"


def describe(identity: dict) -> str:
    source = identity.get("pretrained") or f"checkpoint {identity.get('checksum', '?')[:19]}"
    return f"{identity['name']}/{source} ({identity['dim']}-d)"
