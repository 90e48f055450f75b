"""What matched, for each result: the item's best vector (kind, score, the caption's or passage's text, the
segment's seconds), and explain's per-part breakdown of a result's scores."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .request import QueryPart
from .tables import CAPTION, PASSAGE, SEGMENT, Item


def explain(hits: Sequence[Any], parts: Sequence[QueryPart], vectors: Sequence[np.ndarray], lists: Sequence[Any],
            own: dict[int, list], fused: dict[int, np.ndarray]) -> None:
    """Each result's score for each part (its best vector's), that vector, the best score of each kind of
    vector it has (content, caption, passage, segment) and its one item vector's score; for late fusion,
    its rank in that part's list (of its modality). ``own``: store.part_vectors of the hits; ``fused``:
    their item vectors."""
    for hit in hits:
        vector, rows = fused.get(hit.id), own.get(hit.id, [])
        hit.parts = []
        for n, (part, query) in enumerate(zip(parts, vectors)):
            scores = [float(row.vector @ query) for row in rows]
            best = int(np.argmax(scores)) if scores else None
            entry = {"label": part.label, "weight": part.weight,
                     "score": scores[best] if best is not None else None,
                     "match": describe_match(rows[best], scores[best], hit.item) if best is not None else None,
                     "vectors": {kind: max(s for s, row in zip(scores, rows) if row.kind == kind)
                                 for kind in dict.fromkeys(row.kind for row in rows)},
                     "item_vector": float(vector @ query) if vector is not None else None}
            if lists:
                entry["rank"] = next((l.ranks[hit.id] for l in lists if l.part == n and hit.id in l.ranks), None)
            hit.parts.append(entry)


def describe_match(row, score: float, item: Item) -> dict:
    """What matched, as results show it: the kind and score, the text of a caption or passage, the
    start and end in seconds of a segment (row: a store.StoredVector)."""
    out: dict = {"kind": row.kind, "score": float(score)}
    if row.kind == CAPTION and item.caption:
        out["text"] = item.caption
    elif row.kind == PASSAGE and item.text is not None:
        out["text"] = item.text[int(row.start):int(row.end)]
        out["chars"] = [int(row.start), int(row.end)]
    elif row.kind == SEGMENT:
        out["start"], out["end"] = float(row.start), float(row.end)
    return out
