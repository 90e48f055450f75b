"""Incremental indexing: scan, diff against SQL, decode in worker threads, embed in batches, commit.

Each batch is one transaction (rows, vectors and the generation bump together), so a killed run
leaves a consistent database and the next run picks up where it stopped.
"""
from __future__ import annotations

import collections
import datetime as dt
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import delete, select, update
from tqdm import tqdm

from encoders.identity import encoder_key
from search.store import CAPTION, CONTENT, FAILED, OK, PENDING, Item, Store, Vector, vector_bytes

from .decode import Decoded, DecodeError, content_hash, decode, decode_audio, decode_text, file_hash, probe_audio
from .scan import FileEntry, absolute_roots, scan, under

AUDIO_WAITING = "waiting for an audio encoder"


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    scan_errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        keys = ("added", "updated", "moved", "removed", "unchanged", "failed")
        return {**{k: getattr(self, k) for k in keys}, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Row:
    id: int
    path: str
    modality: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    caption: str | None


@dataclass
class Task:
    entry: FileEntry
    row: Row | None  # the row at the same path, if any
    caption_only: bool = False  # the file is unchanged, its caption sidecar is not


@dataclass
class Prepared:
    task: Task
    hash: str | None = None
    decoded: Decoded | None = None
    pixels: Any = None
    caption: str | None = None
    error: str | None = None
    same_content: bool = False  # only the mtime changed


# Decoded sound in memory at once (being decoded ahead, or waiting in a batch): long recordings at the
# max_audio_seconds cap are ~38 MB each, and a window of 64 read-ahead files would otherwise hold GBs.
SOUND_BUDGET = 256 * 2**20


@dataclass
class IndexerOptions:
    batch_size: int = 32
    workers: int = 0
    max_image_pixels: int = 100_000_000
    max_text_chars: int = 100_000
    max_audio_seconds: float = 600.0
    progress: bool = False


class Indexer:
    """Indexes folders into a Store. The encoders are loaded only when something needs embedding;
    without ``get_audio_encoder`` sounds are stored with metadata and wait for an audio tower."""

    def __init__(self, store: Store, get_encoder: Callable[[], Any], options: IndexerOptions,
                 get_audio_encoder: Callable[[], Any] | None = None):
        self.store = store
        self.get_encoder = get_encoder
        self.get_audio_encoder = get_audio_encoder
        self.options = options
        self.embeddable = frozenset({"image", "text"} | ({"audio"} if get_audio_encoder else set()))
        self.encoder: Any = None
        self.audio_encoder: Any = None

    # --- planning ---------------------------------------------------------------------------------
    def run(self, roots: Iterable[str | os.PathLike]) -> IndexReport:
        started = time.perf_counter()
        roots = absolute_roots(roots)
        scanned = scan(roots)
        report = IndexReport(scan_errors=scanned.errors)
        rows = self._load_rows()
        by_path = {row.path: row for row in rows}
        self._by_hash: dict[str, list[Row]] = collections.defaultdict(list)
        for row in rows:
            if row.content_hash:
                self._by_hash[row.content_hash].append(row)
        self._scanned = scanned.files
        self._claimed: set[int] = set()

        tasks = []
        for path, entry in scanned.files.items():
            row = by_path.get(path)
            if row is None:
                tasks.append(Task(entry, None))
            elif (row.size, row.mtime_ns) != (entry.size, entry.mtime_ns):
                tasks.append(Task(entry, row))
            elif row.status == PENDING and row.modality in self.embeddable:
                tasks.append(Task(entry, row))
            elif row.status != FAILED and row.caption != _read_caption(entry.caption_path,
                                                                        self.options.max_text_chars):
                tasks.append(Task(entry, row, caption_only=True))
            else:
                report.unchanged += 1
        # Items waiting for a vector elsewhere (e.g. after --reembed) are embedded too, wherever they live.
        for row in rows:
            if (row.status == PENDING and row.modality in self.embeddable and row.path not in scanned.files
                    and not under(row.path, roots) and os.path.isfile(row.path)):
                info = os.stat(row.path)
                tasks.append(Task(FileEntry(row.path, row.modality, info.st_size, info.st_mtime_ns,
                                            _sidecar_of(row.path)), row))
        vanished = [row for row in rows if under(row.path, roots) and row.path not in scanned.files]
        self._vanished_ids = {row.id for row in vanished}

        if tasks:
            modalities = {t.entry.modality for t in tasks}
            if modalities & {"image", "text"} or any(t.entry.caption_path or t.caption_only for t in tasks):
                self.encoder = self.get_encoder()
            if "audio" in modalities and self.get_audio_encoder:
                self.audio_encoder = self.get_audio_encoder()
            self._process(tasks, report)
        self._remove([row for row in vanished if row.id not in self._claimed], report)
        report.seconds = time.perf_counter() - started
        return report

    def _load_rows(self) -> list[Row]:
        with self.store.session() as session:
            result = session.execute(select(Item.id, Item.path, Item.modality, Item.size, Item.mtime_ns,
                                            Item.content_hash, Item.status, Item.caption))
            return [Row(*r) for r in result]

    # --- workers ----------------------------------------------------------------------------------
    def _prepare(self, task: Task, force_decode: bool = False) -> Prepared:
        """Runs in a worker thread: read once, hash, decode and preprocess unless the hash makes it moot."""
        entry = task.entry
        out = Prepared(task)
        if task.caption_only:
            out.hash, out.same_content = task.row.content_hash, True
            out.caption = _read_caption(entry.caption_path, self.options.max_text_chars)
            return out
        # Sounds (and films' sound tracks) can be long: hashed and decoded from the file in pieces, never
        # held whole; other files are read once and decoded from memory.
        streamed = entry.modality == "audio"
        try:
            if streamed:
                data, out.hash = b"", file_hash(entry.path)
            else:
                with open(entry.path, "rb") as handle:
                    data = handle.read()
                out.hash = content_hash(data)
        except OSError as exc:
            out.error = f"cannot read file: {exc.strerror or exc}"
            return out
        out.caption = _read_caption(entry.caption_path, self.options.max_text_chars)
        if task.row is not None and task.row.content_hash == out.hash and task.row.status != PENDING:
            out.same_content = True
            return out
        if task.row is None and self._by_hash.get(out.hash) and not force_decode:
            return out  # a move or a copy: the main thread decides, usually without decoding
        try:
            if streamed and self.audio_encoder is not None:
                out.decoded = decode_audio(entry.path, self.audio_encoder.config.sample_rate,
                                           self.options.max_audio_seconds)
            elif streamed:
                out.decoded = probe_audio(entry.path)
            else:
                out.decoded = decode(entry.modality, data, entry.path, self.options.max_image_pixels,
                                     self.options.max_text_chars)
            if out.decoded.image is not None and self.encoder is not None:
                out.pixels = self.encoder.preprocess_image(out.decoded.image)
                out.decoded.image = None  # keep only the tensor in flight
        except DecodeError as exc:
            out.error = str(exc)
        except Exception as exc:  # a decoder bug on one file must not stop the run
            out.error = f"unexpected decoder error: {type(exc).__name__}: {str(exc)[:160]}"
        return out

    def _sound_bytes(self, task: Task) -> int:
        """An upper estimate of a task's decoded sound (16 kHz mono float32, capped), before decoding it:
        compressed audio decodes to at most ~16× its file size (32 kbit/s Opus)."""
        if task.entry.modality != "audio" or task.caption_only:
            return 0
        capped = int(self.options.max_audio_seconds * 16_000 * 4)
        return min(capped, 16 * task.entry.size)

    def _process(self, tasks: list[Task], report: IndexReport) -> None:
        workers = self.options.workers or os.cpu_count() or 1
        batch: list[Prepared] = []
        held = 0  # estimated bytes of decoded sound in the batch
        budget = max(SOUND_BUDGET, int(self.options.max_audio_seconds * 16_000 * 4))  # one capped sound fits
        bar = tqdm(total=len(tasks), unit="file", disable=not self.options.progress, leave=False)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmsearch-decode")
        try:
            window = max(self.options.batch_size * 2, workers * 4)
            # Half the budget for sounds being decoded ahead, half for the batch waiting for the tower
            for prepared in _bounded_map(pool, self._prepare, tasks, window, self._sound_bytes, budget // 2):
                batch.append(prepared)
                held += self._sound_bytes(prepared.task)
                bar.update(1)
                if len(batch) >= self.options.batch_size or held >= budget // 2:
                    self._commit(batch, report)
                    batch, held = [], 0
            self._commit(batch, report)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    # --- writing ----------------------------------------------------------------------------------
    def _commit(self, batch: list[Prepared], report: IndexReport) -> None:
        if not batch:
            return
        vectors = self._embed(batch)
        captions = self._embed_captions(batch)
        with self.store.session() as session:
            generation = self.store.bump_generation(session)
            for prepared in batch:
                self._write(session, prepared, vectors.get(id(prepared)), generation, report)
                self._write_caption(session, prepared, captions.get(id(prepared)), generation)

    def _embed_captions(self, batch: list[Prepared]) -> dict[int, np.ndarray]:
        """Caption sidecars go through the text tower, unless the item kept both file and caption."""
        todo = [p for p in batch if p.caption and not p.error
                and not (p.same_content and p.task.row is not None and p.caption == p.task.row.caption)]
        if not todo:
            return {}
        return {id(p): v for p, v in zip(todo, self.encoder.encode_texts([p.caption for p in todo]))}

    def _embed(self, batch: list[Prepared]) -> dict[int, np.ndarray]:
        """Resolve moves/copies first, then run the model once per modality for the rest."""
        out: dict[int, np.ndarray] = {}
        for prepared in batch:
            if prepared.task.row is None and prepared.hash and prepared.decoded is None and not prepared.error:
                claimed = self._claim_move(prepared)
                needs_vector = claimed is not None and not prepared.same_content  # a moved item still pending
                if needs_vector or (claimed is None and self._copy_source(prepared) is None):
                    fresh = self._prepare(prepared.task, force_decode=True)
                    prepared.decoded, prepared.pixels, prepared.error = fresh.decoded, fresh.pixels, fresh.error
        images = [p for p in batch if p.pixels is not None and not p.error]
        texts = [p for p in batch if p.decoded is not None and p.decoded.text is not None
                 and p.task.entry.modality == "text" and not p.error]
        if images:
            import torch  # only here: planning and no-op runs never import torch
            for p, vector in zip(images, self.encoder.encode_pixels(torch.stack([p.pixels for p in images]))):
                out[id(p)] = vector
        if texts:
            for p, vector in zip(texts, self.encoder.encode_texts([p.decoded.text for p in texts])):
                out[id(p)] = vector
        sounds = [p for p in batch if p.decoded is not None and p.decoded.wave is not None and not p.error]
        if sounds:
            for p, vector in zip(sounds, self.audio_encoder.encode_waves([p.decoded.wave for p in sounds])):
                out[id(p)] = vector
                p.decoded.wave = None
        return out

    def _claim_move(self, prepared: Prepared) -> Row | None:
        for row in self._by_hash.get(prepared.hash, ()):
            gone = row.id in self._vanished_ids or (row.path not in self._scanned and not os.path.exists(row.path))
            if gone and row.id not in self._claimed and row.modality == prepared.task.entry.modality:
                self._claimed.add(row.id)
                prepared.task = Task(prepared.task.entry, row)
                prepared.same_content = not (row.status == PENDING and row.modality in self.embeddable)
                return row
        return None

    def _copy_source(self, prepared: Prepared) -> Row | None:
        for row in self._by_hash.get(prepared.hash, ()):
            if row.status == OK and row.modality == prepared.task.entry.modality:
                prepared.decoded = Decoded(meta={"copy_of": row.id})
                return row
        return None

    def _write(self, session, prepared: Prepared, vector: np.ndarray | None, generation: int,
               report: IndexReport) -> None:
        entry, row = prepared.task.entry, prepared.task.row
        item = session.get(Item, row.id) if row is not None else None
        moved = item is not None and item.path != entry.path
        if item is None:
            item = Item(path=entry.path, modality=entry.modality, status=PENDING)
            session.add(item)
        item.path, item.modality = entry.path, entry.modality
        item.size, item.mtime_ns, item.content_hash = entry.size, entry.mtime_ns, prepared.hash
        item.caption = prepared.caption
        item.indexed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        if prepared.same_content:
            if moved:
                report.moved += 1
            elif prepared.task.caption_only:
                report.updated += 1
            else:
                report.unchanged += 1
            return
        if prepared.error:
            item.status, item.error = FAILED, prepared.error
            if row is not None:
                session.execute(delete(Vector).where(Vector.item_id == row.id))
            report.failed += 1
            report.failures.append((entry.path, prepared.error))
            return
        if row is None:
            report.added += 1
        elif moved:
            report.moved += 1
        else:
            report.updated += 1
        meta = prepared.decoded.meta if prepared.decoded else {}
        source_id = meta.get("copy_of")
        if source_id is not None:
            source = session.get(Item, source_id)
            copied = session.get(Vector, (source_id, CONTENT))
            vector = copied.array() if copied is not None else None
            for column in ("mime", "width", "height", "duration", "sample_rate", "channels", "taken_at", "text"):
                setattr(item, column, getattr(source, column))
        else:
            for column in ("mime", "width", "height", "duration", "sample_rate", "channels", "taken_at"):
                setattr(item, column, meta.get(column))
            item.text = prepared.decoded.text if prepared.decoded else None
        session.flush()  # a new item needs its id before its vector
        if vector is None:
            item.status = PENDING
            item.error = AUDIO_WAITING if entry.modality == "audio" else "waiting to be embedded"
            session.execute(delete(Vector).where(Vector.item_id == item.id))
            return
        item.status, item.error = OK, None
        tower = self.audio_encoder if entry.modality == "audio" else self.encoder
        session.merge(Vector(item_id=item.id, part=CONTENT, encoder=encoder_key(tower.identity), dim=len(vector),
                             data=vector_bytes(vector), generation=generation))

    def _write_caption(self, session, prepared: Prepared, vector: np.ndarray | None, generation: int) -> None:
        """Keep the caption vector in step with the caption; the index re-fuses the item on its next sync."""
        item = session.get(Item, prepared.task.row.id) if prepared.task.row is not None else \
            session.scalar(select(Item).where(Item.path == prepared.task.entry.path))
        if item is None or item.status != OK:
            return
        if vector is not None:
            session.merge(Vector(item_id=item.id, part=CAPTION, encoder=encoder_key(self.encoder.identity),
                                 dim=len(vector), data=vector_bytes(vector), generation=generation))
        elif item.caption is None and session.get(Vector, (item.id, CAPTION)) is not None:
            session.execute(delete(Vector).where(Vector.item_id == item.id, Vector.part == CAPTION))
            # the content row carries the change: a catch-up re-reads items with a newer row
            session.execute(update(Vector).where(Vector.item_id == item.id).values(generation=generation))

    def _remove(self, rows: list[Row], report: IndexReport) -> None:
        if rows:
            report.removed += self.store.remove_ids([row.id for row in rows])


def _read_caption(path: str | None, max_chars: int) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return decode_text(handle.read(), max_chars).text
    except (OSError, DecodeError):
        return None


def _sidecar_of(path: str) -> str | None:
    candidate = os.path.splitext(path)[0] + ".txt"
    return candidate if os.path.isfile(candidate) and candidate != path else None


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: Sequence, window: int,
                 cost: Callable[[Any], int] = lambda _: 0, budget: int = 0) -> Iterator:
    """Like pool.map, in order, but with at most ``window`` items in flight and, when a ``cost`` is given,
    their costs summing to at most ``budget`` (one item always runs), so memory stays bounded."""
    pending: collections.deque[tuple[Future, int]] = collections.deque()
    iterator = iter(items)
    held = 0
    waiting = None  # an item taken from the iterator that did not fit yet

    def fill() -> None:
        nonlocal held, waiting
        while len(pending) < window:
            item = waiting if waiting is not None else next(iterator, None)
            waiting = None
            if item is None:
                return
            price = cost(item)
            if pending and held + price > budget:
                waiting = item
                return
            pending.append((pool.submit(fn, item), price))
            held += price

    fill()
    while pending:
        future, price = pending.popleft()
        result = future.result()
        held -= price
        fill()
        yield result
