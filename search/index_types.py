"""Which FAISS index a part of the vector index gets (setting index_type "auto"), how many vectors train it,
and the layout an index file records in its sidecar (IndexState).

Below ``ann_threshold`` vectors a part is searched exactly (its codes: Flat, SQfp16 or SQ8). Above it, an
inverted-file index with nlist ≈ √n lists: each query then scans nprobe/nlist of the vectors plus the nlist
centroids, the least total work at nlist = √n · √nprobe, and training stays cheap (64 vectors per list).
nlist moves in steps of √2, one per doubling of n (steps at 2^k vectors, rounded to the nearest k), so a
growing collection is retrained and rebuilt each time it has doubled, and never between: vectors added in
between are assigned to the lists it has.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import faiss

from .tables import FUSED

AUTO = "auto"
CODES = ("Flat", "SQfp16", "SQ8")
PER_LIST = 64  # training vectors per inverted list: faiss warns below 39, and k-means time grows with it
TRAIN_OTHER = 2 ** 17  # a quantiser's ranges or PQ codebooks need far fewer than a large collection holds


def auto_factory(count: int, codes: str, exact_below: int) -> str:
    """The factory string for a part of ``count`` vectors."""
    if count < exact_below:
        return codes
    step = round(math.log2(max(count, 1)))
    return f"IVF{round(2 ** (step / 2))},{codes}"


def nlist_of(factory: str, dim: int = 8) -> int:
    """Inverted lists of a factory string's index; 0 when it is not an IVF type (or not valid)."""
    try:
        ivf = faiss.try_extract_index_ivf(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
    except RuntimeError:
        return 0
    return int(ivf.nlist) if ivf is not None else 0


def training_size(factory: str, count: int, dim: int = 8) -> int:
    """How many of ``count`` vectors train this index type: none for an exact one, PER_LIST a list for IVF,
    at most TRAIN_OTHER for other trained types (scalar quantisers, PQ codebooks); all when there are fewer."""
    if faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained:
        return 0
    nlist = nlist_of(factory, dim)
    return min(count, PER_LIST * nlist if nlist else TRAIN_OTHER)


@dataclass
class IndexState:
    generation: int
    encoder: str
    dim: int
    factory: str
    weights: str = "{}"  # JSON of the per-modality weights item vectors are fused with (not in the index)
    space: str = FUSED  # which items: all, or one modality's (mmsearch.modalities)
    ids: str = "item"  # what its ids are: "vector" (tables.vector_id); "item": a file from before passages

    def layout(self) -> str:
        return f"{self.space} {self.encoder}/{self.dim}d/{self.factory}/{self.ids} ids"

    def same_layout(self, other: "IndexState") -> bool:
        return (self.space, self.encoder, self.dim, self.factory, self.ids) == \
            (other.space, other.encoder, other.dim, other.factory, other.ids)

    def weight_map(self) -> dict[str, float]:
        return json.loads(self.weights)
