"""How a model is named in the data dir, without importing torch."""
from __future__ import annotations


def encoder_key(identity: dict) -> str:
    """Short stable label stored beside every vector this model produced."""
    source = identity.get("pretrained") or identity["checksum"][:23]
    return f"{identity['name']}/{source}"


def describe(identity: dict) -> str:
    source = identity.get("pretrained") or f"checkpoint {identity.get('checksum', '?')[:19]}"
    return f"{identity['name']}/{source} ({identity['dim']}-d)"
