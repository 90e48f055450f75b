"""A classifier on disk: ``stem.safetensors`` (its tensors) and ``stem.json`` (labels, fusion, views, figures).

The JSON is written last and records the tensor file's SHA-256, so a crash between the two writes, or
tensors copied from another model, is a mismatched pair that load refuses. Both files are treated as
hostile: sizes are checked before anything is read, every field's type and range, every tensor's name,
dtype and shape (from the header, before loading) and that its values are finite.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from mmsearch.errors import ModelLoadError, first_line
from mmsearch.files import atomic_write

from .classifiers import FUSIONS, Classifier, FusionNet
from .views import VIEWS

FORMAT, VERSION = "mmsearch-classifier", 1
MAX_LABELS, MAX_LABEL_CHARS, MAX_DIM = 10_000, 500, 16_384
MAX_JSON_BYTES = 16 * 2**20  # 10,000 labels and the figures fit many times over
HEADER_SLACK = 2**20  # safetensors' JSON header on top of the raw tensor bytes


def paths(stem: str | Path) -> tuple[Path, Path]:
    """(tensors, JSON) for a stem; a stem given with either suffix means the same pair."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_classifier(model: Classifier, stem: str | Path) -> tuple[Path, Path]:
    from safetensors.numpy import save_file
    tensor_path, meta_path = paths(stem)
    tensors = {name: np.ascontiguousarray(value.detach().cpu().numpy(), np.float32)
               for name, value in model.net.state_dict().items()}
    atomic_write(tensor_path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    meta = {"format": FORMAT, "version": VERSION, "fusion": model.fusion, "labels": list(model.labels),
            "views": list(model.views), "view_order": list(VIEWS), "dim": model.dim,
            "multi_label": bool(model.multi_label), "threshold": float(model.threshold),
            "view_weights": model.view_weights, "tensors": {k: list(v.shape) for k, v in tensors.items()},
            "tensors_sha256": _sha256(tensor_path), "training": model.training}
    text = json.dumps(meta, indent=1, allow_nan=False)  # fails here, before writing, on unsavable figures
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(text))
    return tensor_path, meta_path


class _Refused(Exception):
    """A reason load gives, wrapped into one ModelLoadError naming the file."""


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _Refused(reason)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_meta(meta_path: Path) -> dict:
    _require(meta_path.is_file(), "no such file")
    _require(meta_path.stat().st_size <= MAX_JSON_BYTES, f"over {MAX_JSON_BYTES} bytes")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: [[[[…]]]] nesting
        raise _Refused(f"not JSON ({first_line(exc, 80)})") from None
    _require(isinstance(meta, dict) and meta.get("format") == FORMAT, "not a classifier file")
    _require(meta.get("version") == VERSION, f"format version {str(meta.get('version'))[:20]}, "
                                             f"this mmsearch reads {VERSION}")
    _require(meta.get("fusion") in FUSIONS, f"unknown fusion {str(meta.get('fusion'))[:40]!r}")
    labels = meta.get("labels")
    _require(isinstance(labels, list) and 2 <= len(labels) <= MAX_LABELS, f"labels must be a list of 2 to "
                                                                          f"{MAX_LABELS}")
    _require(all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in labels) and
             len(set(labels)) == len(labels), "labels must be unique, non-empty strings")
    _require(meta.get("view_order") == list(VIEWS), "made with other views")
    views = meta.get("views")
    _require(isinstance(views, list) and views and all(v in VIEWS for v in views) and
             len(set(views)) == len(views), "bad list of views")
    dim = meta.get("dim")
    _require(isinstance(dim, int) and not isinstance(dim, bool) and 1 <= dim <= MAX_DIM, "bad dimension")
    _require(isinstance(meta.get("multi_label"), bool), "multi_label must be true or false")
    threshold = meta.get("threshold")
    _require(_number(threshold) and 0 < threshold < 1, "threshold must be between 0 and 1")
    weights = meta.get("view_weights")
    _require(isinstance(weights, dict) and set(weights) == set(VIEWS) and
             all(_number(w) and w >= 0 for w in weights.values()) and any(weights.values()), "bad view weights")
    _require(isinstance(meta.get("tensors_sha256"), str), "no tensor checksum")
    _require(isinstance(meta.get("training", {}), dict), "bad training figures")
    return meta


def _shapes(fusion: str, dim: int, labels: int) -> dict[str, tuple[int, ...]]:
    """FusionNet's state_dict shapes, known before building one (a hostile header must not make us allocate)."""
    views = len(VIEWS)
    if fusion == "mean":
        return {"centre": (1, dim), "weight": (dim, labels), "bias": (labels,)}
    if fusion == "concat":
        return {"centre": (views, dim), "weight": (views * dim + views, labels), "bias": (labels,)}
    return {"centre": (views, dim), "key": (dim,), "view_bias": (views,), "weight": (views, dim, labels),
            "bias": (labels,)}


def _read_tensors(tensor_path: Path, meta: dict, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    _require(tensor_path.is_file(), f"no tensor file {tensor_path.name}")
    raw = sum(4 * math.prod(shape) for shape in expected.values())
    size = tensor_path.stat().st_size
    _require(raw <= size <= raw + HEADER_SLACK, f"tensor file of {size} bytes cannot hold {raw} bytes of tensors")
    _require(_sha256(tensor_path) == meta["tensors_sha256"], f"{tensor_path.name} is not the tensor file "
                                                             f"saved with it (checksum differs)")
    try:
        with safe_open(str(tensor_path), "np") as handle:
            _require((handle.metadata() or {}).get("format") == FORMAT, "tensor file of another kind")
            _require(set(handle.keys()) == set(expected), "unexpected tensor names")
            for name, shape in expected.items():
                piece = handle.get_slice(name)
                _require(piece.get_dtype() == "F32" and tuple(piece.get_shape()) == shape,
                         f"tensor {name} is {piece.get_dtype()} {tuple(piece.get_shape())}, not F32 {shape}")
            tensors = {name: handle.get_tensor(name) for name in expected}
    except _Refused:
        raise
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise _Refused(f"unreadable tensors ({first_line(exc, 80)})") from None
    _require(all(np.isfinite(t).all() for t in tensors.values()), "tensors hold NaN or infinity")
    return tensors


def load(stem: str | Path) -> Classifier:
    import torch
    tensor_path, meta_path = paths(stem)
    try:
        meta = _read_meta(meta_path)
        tensors = _read_tensors(tensor_path, meta, _shapes(meta["fusion"], meta["dim"], len(meta["labels"])))
        net = FusionNet(meta["fusion"], meta["dim"], len(meta["labels"]),
                        [float(meta["view_weights"][v]) for v in VIEWS])
        net.load_state_dict({name: torch.from_numpy(value) for name, value in tensors.items()}, strict=True)
    except _Refused as reason:
        raise ModelLoadError(f"cannot load classifier {meta_path.with_suffix('')}: {reason}") from None
    return Classifier(net, list(meta["labels"]), tuple(meta["views"]), meta["multi_label"],
                      float(meta["threshold"]), dict(meta.get("training", {})))
