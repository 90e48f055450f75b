"""What a search asks for, in one shape shared by the CLI, the JSON API and the library."""
from __future__ import annotations

import datetime as dt
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmsearch.errors import MMSearchError
from mmsearch.modalities import MODALITIES, check

KINDS = ("text", "image", "audio", "item", "vector")
FUSIONS = ("early", "rrf", "relative", "dbsf")
INDEXES = ("fused", "modality")  # what late fusion ranks in: the whole index, or each modality's part of it
MAX_K = 1000
MAX_ID = 2 ** 63 - 1  # SQL's BIGINT: item ids, sizes and nanosecond times all fit in it
MAX_OFFSET = 1_000_000  # the deepest page a search may ask for
MAX_RRF_K = 100_000
MAX_TEXT_CHARS = 10_000  # a text part's value (the query text itself: setting query_max_chars)
MAX_PATH_CHARS = 4096  # path_prefix and path_glob
MAX_LABEL_CHARS = 200  # a part's label, and a tag's label or set name (search.tags.MAX_NAME)
MAX_FILTER_TAGS = 32  # labels in one tags filter
MAX_VECTOR_DIMS = 8192  # a vector part's numbers (the data dir's model fixes how many it must have)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (settings query_max_*, explain_max_rows); a request past one is an error
    that names the setting."""

    max_parts: int = 32
    max_chars: int = 4000
    max_weight: float = 1000.0
    explain_rows: int = 4000

    @classmethod
    def of(cls, settings: Any) -> "Limits":
        return cls(settings.query_max_parts, settings.query_max_chars, settings.query_max_weight,
                   settings.explain_max_rows)

    def check(self, request: "SearchRequest") -> None:
        if len(request.parts) > self.max_parts:
            raise MMSearchError(f"at most {self.max_parts} query parts (setting query_max_parts), not "
                                f"{len(request.parts)}")
        heavy = next((p for p in request.parts if abs(p.weight) > self.max_weight), None)
        if heavy is not None:
            raise MMSearchError(f"a query part's weight is at most {self.max_weight:g} in size (setting "
                                f"query_max_weight), not {heavy.weight:.3g}")
        if request.explain and request.k * len(request.parts) > self.explain_rows:
            raise MMSearchError(f"explain: k × parts is {request.k * len(request.parts)}, at most "
                                f"{self.explain_rows} (setting explain_max_rows)")


@dataclass
class QueryPart:
    """One part of a query: words, the bytes of an image or sound, an indexed item's id or a vector (kept as a
    tuple of floats, normalised when embedded); signed weight."""

    kind: str
    value: Any
    weight: float = 1.0
    label: str = ""
    words: str = ""  # text as typed, "quoted phrases" kept, for hybrid's full-text search; "" means value

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MMSearchError(f"unknown query part kind {self.kind!r}: use {', '.join(KINDS)}")
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or self.weight != self.weight:
            raise MMSearchError("a query part's weight must be a number")
        if self.weight == 0:
            raise MMSearchError("a query part's weight must not be 0")
        if self.kind == "text" and (not isinstance(self.value, str) or not self.value.strip()):
            raise MMSearchError("a text query part needs non-empty text")
        if self.kind == "item" and (not isinstance(self.value, int) or isinstance(self.value, bool)
                                    or not 0 < self.value <= MAX_ID):
            raise MMSearchError("an item query part needs an item id, a positive integer")
        if self.kind in ("image", "audio") and not isinstance(self.value, (bytes, bytearray)):
            raise MMSearchError(f"an {self.kind} query part needs file content")
        if self.kind == "vector":
            self.value = vector_value(self.value)
        if not self.label:
            self.label = {"text": lambda v: f'"{v}"', "item": lambda v: f"like:{v}"}.get(
                self.kind, lambda v: self.kind)(self.value)


def vector_value(raw: Any) -> tuple[float, ...]:
    """A vector part's numbers: a sequence or a 1-d array (or one row) of 1 to MAX_VECTOR_DIMS finite real
    numbers, not all 0 (a zero vector has no direction)."""
    shape = getattr(raw, "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] == 1:
        raw = raw[0]
    if isinstance(raw, (str, bytes, bytearray)) or not hasattr(raw, "__len__") or len(getattr(raw, "shape", (0,))) != 1:
        raise MMSearchError("a vector query part needs a list of numbers")
    if not 1 <= len(raw) <= MAX_VECTOR_DIMS:
        raise MMSearchError(f"a vector query part has 1 to {MAX_VECTOR_DIMS} numbers, not {len(raw)}")
    values = raw.tolist() if hasattr(raw, "tolist") else list(raw)
    # per-number checks only when something is not a plain int or float (a JSON body's 512 numbers cost
    # ~2 ms a request the slow way, a query part being checked more than once)
    if not set(map(type, values)) <= {int, float} and \
            any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values):
        raise MMSearchError("a vector query part's numbers must all be real numbers")
    try:
        array = np.array(values, np.float64)
    except OverflowError:
        raise MMSearchError("a vector query part's numbers must be finite") from None
    if not np.isfinite(array).all():
        raise MMSearchError("a vector query part's numbers must be finite")
    values = tuple(array.tolist())
    if not array.any():
        raise MMSearchError("a vector query part must not be all zeros: a zero vector has no direction")
    return values


@dataclass
class Filters:
    """Evaluated together with the vector search (an id selector), never after truncation."""

    modalities: list[str] | None = None
    path_prefix: str | None = None
    path_glob: str | None = None
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None
    date_field: str = "mtime"  # or "taken_at" (EXIF time)
    min_size: int | None = None
    max_size: int | None = None
    has_caption: bool | None = None
    tags: list[str] | None = None  # every label must be on the item (of any set, or of tag_set's)
    tag_set: str | None = None  # only this set's tags count; without tags: items with any tag of the set

    def __post_init__(self) -> None:
        for modality in self.modalities or ():
            check(modality)
        if isinstance(self.tags, str):
            self.tags = [self.tags]
        if self.tags is not None:
            if not isinstance(self.tags, (list, tuple)) or len(self.tags) > MAX_FILTER_TAGS or any(
                    not isinstance(t, str) or not 0 < len(t) <= MAX_LABEL_CHARS for t in self.tags):
                raise MMSearchError(f"tags must be a list of at most {MAX_FILTER_TAGS} labels of 1 to "
                                    f"{MAX_LABEL_CHARS} characters")
            self.tags = list(dict.fromkeys(self.tags)) or None
        if self.tag_set is not None and (not isinstance(self.tag_set, str)
                                         or not 0 < len(self.tag_set) <= MAX_LABEL_CHARS):
            raise MMSearchError(f"tag_set must be a tag set's name, 1 to {MAX_LABEL_CHARS} characters")
        if self.date_field not in ("mtime", "taken_at"):
            raise MMSearchError("date_field must be mtime or taken_at")

    @property
    def active(self) -> bool:
        if self.modalities and set(self.modalities) != set(MODALITIES):
            return True
        return any(getattr(self, name) is not None for name in (
            "path_prefix", "path_glob", "date_from", "date_to", "min_size", "max_size", "has_caption", "tags",
            "tag_set"))


@dataclass
class SearchRequest:
    parts: list[QueryPart]
    k: int = 10
    offset: int = 0
    filters: Filters = field(default_factory=Filters)
    fusion: str = "early"
    rrf_k: int = 60
    explain: bool = False
    exclude_self: bool = False  # for item parts: leave the item (and its exact duplicates) out
    dedupe: str | float | None = None  # "hash", or a cosine threshold for near duplicates
    index: str | None = None  # late fusion only; None: "modality"
    hybrid: bool = False  # also rank the text parts lexically (full-text index) and fuse that list in
    alpha: float = 0.5  # hybrid: the vector ranking's share, 1 − alpha the lexical one's (Weaviate's alpha)

    def __post_init__(self) -> None:
        if not self.parts:
            raise MMSearchError("a search needs at least one query part")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= MAX_K:
            raise MMSearchError(f"k must be an integer from 1 to {MAX_K}")
        if not isinstance(self.offset, int) or isinstance(self.offset, bool) or self.offset < 0:
            raise MMSearchError("offset must be a non-negative integer")
        if self.fusion not in FUSIONS:
            raise MMSearchError(f"unknown fusion {self.fusion!r}: use early, rrf, relative or dbsf")
        if self.index is not None and self.index not in INDEXES:
            raise MMSearchError(f"unknown index {self.index!r}: use fused or modality")
        if self.fusion == "early" and self.index == "modality":
            raise MMSearchError("index 'modality' needs late fusion: use fusion rrf, relative or dbsf")
        if self.fusion != "early" and all(p.weight < 0 for p in self.parts):
            raise MMSearchError("late fusion needs at least one part with a positive weight")
        if not isinstance(self.rrf_k, int) or self.rrf_k < 1:
            raise MMSearchError("rrf_k must be a positive integer")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not 0 <= self.alpha <= 1:
            raise MMSearchError("alpha must be a number from 0 to 1")
        if self.hybrid and not any(p.kind == "text" and p.weight > 0 for p in self.parts):
            raise MMSearchError("hybrid search needs a text part with a positive weight (words to look up)")
        if self.dedupe not in (None, "hash") and not (isinstance(self.dedupe, float) and 0 < self.dedupe <= 1):
            raise MMSearchError("dedupe must be 'hash' or a similarity threshold in (0, 1]")
