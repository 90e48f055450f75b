"""Bulk export and import as one Parquet file: a row per item with all its vectors (COLUMNS; README "Bulk import
and export"), the model in the schema's metadata. An import reads the file twice in record batches: a checking
pass that refuses the whole file at its first bad row (rows count from 1), then one transaction that writes."""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import func, insert, select

from mmsearch.encoders.identity import describe, encoder_key
from mmsearch.errors import MMSearchError, ModelMismatchError, first_line
from mmsearch.files import atomic_write
from mmsearch.modalities import AUDIO, MODALITIES, TEXT

from . import lexical
from .store import Store
from .tables import (CAPTION, CAPTION_SLOT, CONTENT, CONTENT_SLOT, FIRST_PART_SLOT, LAYOUT, MAX_SLOTS, OK, PASSAGE,
                     SEGMENT, Item, Vector, vector_bytes)

CHUNK = 10_000  # rows per record batch read and per INSERT
EXPORT_PAGE = 2_000  # items per exported record batch (a long sound brings hundreds of segment vectors)
META = ("model", "model_source", "audio_key", "audio_tower")  # carried as schema metadata mmsearch_<key>
VECTOR = pa.list_(pa.float32())
PART = pa.struct([("kind", pa.string()), ("start", pa.float64()), ("end", pa.float64()), ("vector", VECTOR)])
COLUMNS = {"id": pa.int64(), "path": pa.string(), "modality": pa.string(), "vector": VECTOR,
           "caption": pa.string(), "text": pa.string(), "mtime": pa.timestamp("ns", tz="UTC"), "size": pa.int64(),
           "mime": pa.string(), "width": pa.int32(), "height": pa.int32(), "duration": pa.float64(),
           "sample_rate": pa.int32(), "channels": pa.int32(), "taken_at": pa.timestamp("us"),
           "caption_vector": VECTOR, "parts": pa.list_(PART)}
REQUIRED = ("path", "modality", "vector")
TEXTS = {"path": None, "modality": None, "caption": None, "text": None, "mime": 100}  # column: longest value
INTS = {"size": 2**63 - 1, **dict.fromkeys(("width", "height", "sample_rate", "channels"), 2**31 - 1)}
NUMBERS = {**INTS, "duration": float("inf")}  # column: largest value (the smallest: 0)
FLOATS, PARTS = "a list of floats", "a list of structs (kind, start, end, vector)"  # what _kind calls them
ACCEPTS = {**dict.fromkeys(TEXTS, ("string",)), **dict.fromkeys(INTS, ("integer",)), "vector": (FLOATS,),
           "caption_vector": (FLOATS,), "parts": (PARTS,), "duration": ("integer", "float"),
           "mtime": ("timestamp", "integer", "float"), "taken_at": ("timestamp",)}
ITEM = ("path", "modality", "size", "mtime_ns", "mime", "width", "height", "duration", "sample_rate", "channels",
        "taken_at", "caption", "text")  # the items columns an import writes from the file


class RowError(MMSearchError):
    def __init__(self, row: int | np.ndarray, message: str, mask: np.ndarray | None = None):  # row, or mask's first
        super().__init__(f"row {int(row if mask is None else row[np.argmax(mask)])}: {message}")


class ParquetSource:
    """A Parquet file opened for import: its columns' types checked, its carried META entries read."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise MMSearchError(f"no such file: {self.path}")
        try:
            self.file = pq.ParquetFile(self.path, pre_buffer=False)  # pre-buffered, every batch read stays held
            raw = self.file.schema_arrow.metadata or {}
            self.meta = {k: json.loads(raw[f"mmsearch_{k}".encode()]) for k in (*META, "dim")
                         if f"mmsearch_{k}".encode() in raw}
            # a damaged model entry (not an identity with a name and a dimension) raises here too
            self.meta.get("model") and encoder_key(self.meta["model"]) and int(self.meta["model"]["dim"])
        except (pa.ArrowException, OSError, ValueError, LookupError, TypeError, AttributeError) as exc:
            raise MMSearchError(f"{self.path} is not a Parquet file that mmsearch reads: {first_line(exc)}") from None
        kinds = {f.name: _kind(f.type) for f in self.file.schema_arrow}
        self.columns = [c for c in ACCEPTS if kinds.get(c) not in (None, "null")]  # an all-null column: absent
        if missing := [c for c in REQUIRED if c not in self.columns]:
            raise MMSearchError(f"{self.path} has no {missing[0]!r} column (required: {', '.join(REQUIRED)})")
        if wrong := [c for c in self.columns if kinds[c] not in ACCEPTS[c]]:
            raise MMSearchError(f"{self.path}: column {wrong[0]!r} holds {kinds[wrong[0]]}, not "
                                f"{' or '.join(ACCEPTS[wrong[0]])}")
        self.ignored = sorted(c for c in kinds if c not in COLUMNS)

    def batches(self, dim: int) -> Iterator[Rows]:
        first = 1
        try:  # (an error of the caller's is never raised at the yield: only what reading and checking raise)
            for batch in self.file.iter_batches(batch_size=CHUNK, columns=self.columns):
                yield Rows(batch, first, dim)
                first += batch.num_rows
        except (pa.ArrowException, OSError, ValueError, OverflowError) as exc:  # a damaged file, a bad value
            raise MMSearchError(f"{self.path}: cannot read rows from {first} on: {first_line(exc)}; nothing was "
                                f"imported") from None


def _kind(t: pa.DataType) -> str:
    """What a column's type is, in ACCEPTS's words."""
    t, is_ = (t.value_type if pa.types.is_dictionary(t) else t), pa.types
    if is_.is_string(t) or is_.is_large_string(t) or is_.is_string_view(t):
        return "string"
    if simple := next((k for k in ("integer", "floating", "timestamp", "null") if getattr(is_, f"is_{k}")(t)), None):
        return {"floating": "float"}.get(simple, simple)
    if not (is_.is_list(t) or is_.is_large_list(t) or is_.is_fixed_size_list(t)):
        return str(t)
    fields = {f.name: _kind(f.type) for f in t.value_type} if is_.is_struct(t.value_type) else {}
    parts = (fields.get("kind"), fields.get("vector")) == ("string", FLOATS) and \
        {fields.get("start"), fields.get("end")} <= {"integer", "float"}
    return FLOATS if is_.is_floating(t.value_type) else PARTS if parts else str(t)


def _matrix(column: pa.Array, dim: int, rows: np.ndarray, what: str, required: bool) -> tuple[np.ndarray, np.ndarray]:
    """A list column's vectors, checked and normalised, for the rows that have one; and the mask of those."""
    present = ~column.is_null().to_numpy(zero_copy_only=False)
    if required and not present.all():
        raise RowError(rows, f"{what} is missing", ~present)
    lengths = pc.list_value_length(column).fill_null(dim).to_numpy()
    if (lengths != dim).any():
        raise RowError(rows, f"{what} has {lengths[np.argmax(lengths != dim)]} values, not {dim} (the data "
                       f"dir's dimension)", lengths != dim)
    matrix = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(matrix, axis=1)
    for bad, why in ((~np.isfinite(matrix).all(axis=1), "holds a value that is not a finite number (NaN, infinity "
                      "or missing)"), (norms == 0, "is all zeros"), (~np.isfinite(norms), "is too large to normalise")):
        if bad.any():
            raise RowError(rows[present], f"{what} {why}", bad)
    return (matrix / norms[:, None]).astype(np.float32), present


class Rows:
    """One record batch as checked item rows and vectors; ``numbers``: its rows' numbers (from 1)."""

    def __init__(self, batch: pa.RecordBatch, first: int, dim: int):
        n, get = batch.num_rows, {name: batch.column(name) for name in batch.schema.names}
        self.numbers = np.arange(first, first + n)
        values = {c: [None] * n for c in ITEM} | {"size": [0] * n, "mtime_ns": [0] * n}
        values.update({c: self._texts(c, get[c]) for c in TEXTS if c in get})
        for row, path, modality in zip(self.numbers, values["path"], values["modality"]):
            if modality not in MODALITIES or not path:
                raise RowError(int(row), "path is empty" if not path else
                               f"modality {modality!r} is none of {', '.join(MODALITIES)}")
        values.update({c: self._numbers(c, get[c], NUMBERS[c], null=0 if c == "size" else None)
                       for c in NUMBERS if c in get})
        if "mtime" in get:  # a timestamp, or seconds since 1970
            mtime = get["mtime"]
            ns = mtime.cast(pa.timestamp("ns")).cast(pa.int64()) if pa.types.is_timestamp(mtime.type) else \
                pc.multiply(mtime.cast(pa.float64(), safe=False), 1e9)
            values["mtime_ns"] = [int(v) for v in self._numbers("mtime", ns, 2**63 - 1, -2**63, 0)]
        if "taken_at" in get:
            values["taken_at"] = get["taken_at"].cast(pa.timestamp("us")).to_pylist()
        fixed = {"status": OK, "layout": LAYOUT, "content_hash": None,
                 "indexed_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)}
        self.items = [{**fixed, **dict(zip(values, row))} for row in zip(*values.values())]
        self.content, _ = _matrix(get["vector"], dim, self.numbers, "vector", True)
        self.caption, self.captioned = (np.zeros((0, dim), np.float32), np.zeros(n, bool)) if "caption_vector" \
            not in get else _matrix(get["caption_vector"], dim, self.numbers, "caption_vector", False)
        self._parts(get.get("parts"), dim)

    def _texts(self, column: str, array: pa.Array) -> list[str | None]:
        out, limit = array.cast(pa.string()).to_pylist(), TEXTS[column]
        bad = np.array([v is not None and ("\x00" in v or len(v) > (limit or len(v))) for v in out])
        if bad.any():
            raise RowError(self.numbers, f"{column} holds a NUL character"
                           + (f" or is longer than {limit} characters" if limit else ""), bad)
        return out

    def _numbers(self, column: str, array: pa.Array, high: float, low: float = 0, null: Any = None) -> list:
        """Finite numbers from ``low`` to ``high``; nulls become ``null``."""
        values = array.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        bad = ~array.is_null().to_numpy(zero_copy_only=False) & ~(np.isfinite(values) & (values >= low)
                                                                  & (values <= high))
        if bad.any():
            raise RowError(self.numbers, f"{column} {values[np.argmax(bad)]:g} is out of range", bad)
        return [null if v is None else v for v in array.to_pylist()]

    def _parts(self, column: pa.Array | None, dim: int) -> None:
        """Passages of notes (spans: characters of the text) and segments of sounds (seconds of the duration)."""
        counts = np.zeros(len(self.items), np.int64) if column is None else \
            pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64)
        self.owner = np.repeat(np.arange(len(self.items)), counts)
        self.slots = FIRST_PART_SLOT + np.arange(len(self.owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        self.kinds, self.spans, self.part_vectors = [], np.zeros((0, 2)), np.zeros((0, dim), np.float32)
        if column is None or not len(self.owner):
            return
        rows = self.numbers[self.owner]
        if (counts > MAX_SLOTS - FIRST_PART_SLOT).any():
            raise RowError(self.numbers, f"an item has at most {MAX_SLOTS - FIRST_PART_SLOT} parts",
                           counts > MAX_SLOTS - FIRST_PART_SLOT)
        flat = column.flatten()
        if flat.null_count:
            raise RowError(rows, "a part is null", flat.is_null().to_numpy(zero_copy_only=False))
        fields = dict(zip([f.name for f in flat.type], flat.flatten()))
        self.kinds = fields["kind"].cast(pa.string()).to_pylist()
        self.spans = np.stack([fields[k].to_numpy(zero_copy_only=False).astype(float) for k in ("start", "end")], 1)
        self.part_vectors, _ = _matrix(fields["vector"], dim, rows, "a part's vector", True)
        for i, (kind, (start, end)) in enumerate(zip(self.kinds, self.spans)):
            item, part = self.items[self.owner[i]], f"part {self.slots[i] - FIRST_PART_SLOT + 1}"
            if (kind, item["modality"]) not in ((PASSAGE, TEXT), (SEGMENT, AUDIO)):
                raise RowError(int(rows[i]), f"{part} is a {kind!r}: a note's parts are passages, a sound's segments")
            if not 0 <= start < end <= (len(item["text"] or "") if kind == PASSAGE else (item["duration"] or 0) + 1e-3):
                raise RowError(int(rows[i]), f"{part} spans {start:g}-{end:g}, outside its item's "
                               + ("text" if kind == PASSAGE else "duration"))

    def vector_rows(self, ids: list[int], keys: dict[str, str], generation: int) -> list[dict[str, Any]]:
        """Every vector's row; ``keys``: the encoder keys of the model and the audio tower (a sound's own)."""
        def row(i: int, slot: int, kind: str, vector: np.ndarray, span=(None, None)) -> dict[str, Any]:
            audio = self.items[i]["modality"] == AUDIO and kind in (CONTENT, SEGMENT)
            return {"item_id": ids[i], "slot": slot, "kind": kind, "span_start": span[0], "span_end": span[1],
                    "encoder": keys["audio" if audio else "model"], "dim": len(vector), "data": vector_bytes(vector),
                    "generation": generation}
        return ([row(i, CONTENT_SLOT, CONTENT, v) for i, v in enumerate(self.content)]
                + [row(int(i), CAPTION_SLOT, CAPTION, v) for i, v in zip(np.flatnonzero(self.captioned), self.caption)]
                + [row(int(i), int(s), k, v, (float(a), float(b))) for i, s, k, v, (a, b)
                   in zip(self.owner, self.slots, self.kinds, self.part_vectors, self.spans)])


def import_file(store: Store, source: ParquetSource, meta: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """Check every row, then write them all in one transaction under one new generation; the file is refused
    whole at its first bad row. ``meta``: the data dir's META entries, which the file must match; ``fresh``:
    the data dir has none yet, and the import records these."""
    started, dim = time.monotonic(), int(meta["model"]["dim"])
    _match(source, {**meta, "dim": dim}, ("model", "dim"))
    seen, counts = {}, dict.fromkeys((*MODALITIES, "vectors"), 0)  # path: its row; items per modality
    try:
        for rows in source.batches(dim):  # the checking pass: nothing is written
            for row, item in zip(rows.numbers.tolist(), rows.items):
                if seen.setdefault(item["path"], row) != row:
                    raise RowError(row, f"path {item['path']!r} is also on row {seen[item['path']]}")
                counts[item["modality"]] += 1
                if item["modality"] == AUDIO and not meta.get("audio_key"):
                    raise RowError(row, "a sound, and the data dir has no audio tower its vector could come from "
                                   "(train one, or pass --audio-checkpoint)")
            counts["vectors"] += len(rows.content) + len(rows.caption) + len(rows.part_vectors)
            paths = [item["path"] for item in rows.items]
            with store.session() as session:
                for start in range(0, len(paths), 500):
                    taken = set(session.scalars(select(Item.path).where(Item.path.in_(paths[start:start + 500]))))
                    if taken:
                        row = next(i for i, path in enumerate(paths) if path in taken)
                        raise RowError(int(rows.numbers[row]), f"path {paths[row]!r} is already in the data dir")
        _match(source, {**meta, "dim": dim}, ("audio_key",) if counts[AUDIO] else ())
        with store.session() as session:  # the writing pass: all or nothing
            for key, value in meta.items() if fresh and seen else ():
                Store._set(session, key, value)
            generation = store.bump_generation(session) if seen else 0
            keys = {"model": encoder_key(meta["model"]), "audio": meta.get("audio_key") or ""}
            for rows in source.batches(dim) if seen else ():
                paths = [item["path"] for item in rows.items]
                session.execute(insert(Item.__table__), [{**item, "name_terms": lexical.name_terms(item["path"])}
                                                         for item in rows.items])  # Core: RETURNING goes row by row
                ids = dict(row for start in range(0, len(paths), 500) for row in session.execute(
                    select(Item.path, Item.id).where(Item.path.in_(paths[start:start + 500]))))
                session.execute(insert(Vector.__table__), rows.vector_rows([ids[p] for p in paths], keys, generation))
    except RowError as exc:
        raise MMSearchError(f"{source.path}: {exc}; nothing was imported") from None
    if seen:
        store.analyze()
    return {"imported": len(seen), "by_modality": {m: counts[m] for m in MODALITIES}, "vectors": counts["vectors"],
            "ignored_columns": source.ignored, "seconds": round(time.monotonic() - started, 3)}


def _match(source: ParquetSource, ours: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse a file whose vectors another model made (model, dim; audio_key: another audio tower)."""
    for key in keys:
        theirs, shown = source.meta.get(key), describe if key == "model" else str
        if theirs is not None and ours.get(key) is not None and theirs != ours[key]:
            raise ModelMismatchError(f"{source.path} holds vectors of {shown(theirs)} ({key}), this data dir's are "
                                     f"of {shown(ours[key])}: import it into a fresh data dir (--data-dir)")


def export_file(store: Store, path: str | os.PathLike, meta: dict[str, Any]) -> dict[str, Any]:
    """Every item that has a vector, with all its vectors and ``meta`` (META), into one Parquet file at once."""
    started, dim = time.monotonic(), int(meta["model"]["dim"])
    carried = {f"mmsearch_{k}": json.dumps(v, sort_keys=True) for k, v in {**meta, "dim": dim}.items()}
    schema = pa.schema([pa.field(name, kind) for name, kind in COLUMNS.items()], metadata=carried)
    done = {"exported": 0, "vectors": 0}

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, schema) as writer, store.session() as session:
            last = 0
            while page := session.scalars(select(Item).where(Item.status == OK, Item.id > last)
                                          .order_by(Item.id).limit(EXPORT_PAGE)).all():
                last, vectors = page[-1].id, {}
                for vector in session.execute(select(Vector.item_id, Vector.slot, Vector.kind, Vector.span_start,
                                                     Vector.span_end, Vector.data)
                                              .where(Vector.item_id.between(page[0].id, last))
                                              .order_by(Vector.item_id, Vector.slot)):
                    vectors.setdefault(vector.item_id, []).append(vector)
                items = [item for item in page if vectors.get(item.id) and vectors[item.id][0].slot == CONTENT_SLOT]
                writer.write_batch(_batch(items, [vectors[item.id] for item in items], schema))
                done["exported"] += len(items)
                done["vectors"] += sum(len(vectors[item.id]) for item in items)
            done["skipped"] = session.scalar(select(func.count()).select_from(Item)) - done["exported"]
    try:
        atomic_write(Path(path), write)
    except OSError as exc:
        raise MMSearchError(f"cannot write {path}: {exc.strerror or exc}") from None
    return {**done, "path": str(path), "dim": dim, "seconds": round(time.monotonic() - started, 3)}


def _lists(arrays: list[np.ndarray | None]) -> pa.Array:
    offsets = np.cumsum([0] + [0 if a is None else len(a) for a in arrays], dtype=np.int64).astype(np.int32)
    values = np.concatenate([a for a in arrays if a is not None] or [np.zeros(0, np.float32)])
    mask = pa.array([a is None for a in arrays]) if any(a is None for a in arrays) else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()), mask=mask)


def _batch(items: list[Item], own: list[list[Any]], schema: pa.Schema) -> pa.RecordBatch:
    """One exported record batch: each item's columns, its content vector, caption vector and parts."""
    def data(vector: Any) -> np.ndarray:
        return np.frombuffer(vector.data, "<f4")
    parts = [[v for v in rows if v.slot >= FIRST_PART_SLOT] for rows in own]
    flat = [v for rows in parts for v in rows]
    fields = [pa.array([getattr(v, c) for v in flat], t) for c, t in (("kind", pa.string()),
                                                                     ("span_start", pa.float64()),
                                                                     ("span_end", pa.float64()))]
    counts = pa.array(np.cumsum([0] + [len(p) for p in parts], dtype=np.int32))
    columns = {"mtime": pa.array([i.mtime_ns for i in items], pa.int64()), "vector": _lists([data(r[0]) for r in own]),
               "caption_vector": _lists([next((data(v) for v in r if v.slot == CAPTION_SLOT), None) for r in own]),
               "parts": pa.ListArray.from_arrays(counts, pa.StructArray.from_arrays(
                   [*fields, _lists([data(v) for v in flat])], fields=list(PART)))}
    return pa.RecordBatch.from_arrays([columns[f.name].cast(f.type) if f.name in columns else
                                       pa.array([getattr(item, f.name) for item in items], f.type) for f in schema],
                                      schema=schema)
