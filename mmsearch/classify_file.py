"""One uploaded file scored by the stored tag sets, as each would tag it, without indexing it
(POST /api/classify). Zero-shot label vectors are made once per set and kept for the next request."""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from mmsearch.search.fusion import fuse_parts
from mmsearch.search.tables import CAPTION, CONTENT

from .errors import MMSearchError
from .tagging import VIEW_OF, ZERO_SHOT, load_model

_ANCHORS: dict[tuple, np.ndarray] = {}  # zero-shot label vectors of recently used sets (classify_one)
_ANCHORS_LOCK = threading.Lock()  # the web server's threads share it


def classify_one(library: Any, modality: str, vector: np.ndarray, caption: np.ndarray | None = None,
                 names: Sequence[str] | None = None, top: int = 5) -> list[dict[str, Any]]:
    """An uploaded file's vector (and its caption's) scored by each tag set (``names``, else all) as the set
    would tag it: its ``top`` labels, best first. Nothing is stored."""
    from mmsearch.encoders.views import views_from
    from mmsearch.encoders.zero_shot import label_vectors
    sets = library.store.tags.sets()
    if names is not None:
        for name in names:
            library.store.tags.check(name)
        sets = [s for s in sets if s.name in set(names)]
    found = {VIEW_OF[modality]: np.asarray(vector, np.float32).reshape(-1)}
    if caption is not None:
        found["caption"] = np.asarray(caption, np.float32).reshape(-1)
    out = []
    for tag_set in sets:
        config = tag_set.config
        if tag_set.kind == ZERO_SHOT:
            if modality not in config.get("modalities", []):
                continue
            labels = list(config["labels"])
            parts = {CONTENT: found[VIEW_OF[modality]], **({CAPTION: found["caption"]} if caption is not None else {})}
            fused = fuse_parts(parts, modality, library.settings.modality_weights)  # as the set scored items
            key = (str(library.data_path), tag_set.name, str(tag_set.updated_at), modality)
            with _ANCHORS_LOCK:
                anchors = _ANCHORS.get(key)
            if anchors is None:  # a set's label vectors, made once per process, not once per request
                anchors = label_vectors(library.encoder().encode_texts, labels, library.settings.tag_templates[modality])
                with _ANCHORS_LOCK:
                    while len(_ANCHORS) >= 8:
                        _ANCHORS.pop(next(iter(_ANCHORS)))
                    _ANCHORS[key] = anchors
            scores = anchors @ fused
            order = np.argsort(-scores)[:top]
            ranked = [(labels[j], float(scores[j])) for j in order]
        else:
            try:
                model = load_model(library, tag_set.name)
            except MMSearchError:
                if names is None:
                    continue  # a set whose model cannot load does not stop the others answering
                raise MMSearchError(f"tag set {tag_set.name!r}: its classifier cannot be loaded; run "
                                    "train-classifier again") from None
            probabilities = model.predict_proba(views_from([found], len(found[VIEW_OF[modality]])))[0]
            order = np.argsort(-probabilities)[:top]
            ranked = [(model.labels[j], float(probabilities[j])) for j in order]
        out.append({"set": tag_set.name, "kind": tag_set.kind,
                    "labels": [{"label": label, "score": score} for label, score in ranked]})
    return out
