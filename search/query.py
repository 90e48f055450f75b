"""Nearest-neighbour queries over the vector index, joined with item metadata from SQL."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmsearch.errors import MMSearchError

from .store import Item, Store
from .vector_index import FaissIndex

MODALITIES = ("image", "audio", "text")


@dataclass
class Hit:
    id: int
    score: float
    item: Item

    def as_dict(self) -> dict:
        return {"id": self.id, "path": self.item.path, "modality": self.item.modality, "score": self.score}


class Searcher:
    def __init__(self, store: Store, index: FaissIndex):
        self.store = store
        self.index = index

    def by_vector(self, vector: np.ndarray, k: int, modalities: Sequence[str] | None = None,
                  first: int | None = None) -> list[Hit]:
        """Top-k items by inner product; ``first`` (an item id) is put at the top when it is a hit."""
        if k <= 0:
            raise MMSearchError("k must be a positive integer")
        allowed = None
        if modalities and set(modalities) != set(MODALITIES):
            unknown = set(modalities) - set(MODALITIES)
            if unknown:
                raise MMSearchError(f"unknown modality {sorted(unknown)[0]!r}: use image, audio or text")
            allowed = self.store.ids_with_modality(modalities)
            if len(allowed) == 0:
                return []
        if self.index.ntotal == 0:
            return []
        scores, ids = self.index.search(vector, k, allowed)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        if first is not None:
            # Exact duplicates tie with the item itself; the item asked about leads.
            pairs.sort(key=lambda p: (p[0] != first, -p[1]))
        items = self.store.items_by_id(i for i, _ in pairs)
        return [Hit(i, s, items[i]) for i, s in pairs if i in items]

    def like(self, item_id: int, k: int, modalities: Sequence[str] | None = None) -> list[Hit]:
        item = self.store.get_item(item_id)
        if item is None:
            raise MMSearchError(f"no item with id {item_id}")
        vector = self.store.item_vector(item_id)
        if vector is None:
            raise MMSearchError(f"item {item_id} ({item.path}) has no vector: its status is {item.status}"
                                + (f" ({item.error})" if item.error else ""))
        return self.by_vector(vector, k, modalities, first=item_id)
