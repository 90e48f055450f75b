"""Incremental indexing: scan, diff against SQL, decode in worker threads, embed in batches, commit.

Each batch is one transaction (rows, vectors and the generation bump together), so a killed run
leaves a consistent database and the next run picks up where it stopped.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
from tqdm import tqdm

from mmsearch.encoders.identity import encoder_key
from mmsearch.search.store import Store
from mmsearch.search.tables import OK, PASSAGE, PENDING, SEGMENT
from mmsearch.search.writes import Batch, Part

from .decode import Decoded, DecodeError, content_hash, decode, decode_audio, file_hash, model_input_side, probe_audio
from .bounded import bounded_map
from .plan import IndexReport, Row, Task, plan, read_caption
from .scan import absolute_roots, scan

AUDIO_WAITING = "waiting for an audio encoder"


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
    max_image_bytes: int = 192 * 2**20  # per worker: each decodes one image at a time
    max_image_aspect: float = 50.0
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
        planned = plan([Row(*r) for r in self.store.index_rows()], scanned, roots, self.embeddable,
                       self.options.max_text_chars)
        report.unchanged = planned.unchanged
        self._by_hash = planned.by_hash
        self._scanned = scanned.files
        self._claimed: set[int] = set()
        self._vanished_ids = {row.id for row in planned.vanished}
        tasks = planned.tasks
        if tasks:
            modalities = {t.entry.modality for t in tasks}
            if modalities & {"image", "text"} or any(t.entry.caption_path or t.caption_only for t in tasks):
                self.encoder = self.get_encoder()
            if "audio" in modalities and self.get_audio_encoder:
                self.audio_encoder = self.get_audio_encoder()
            self._process(tasks, report)
        self._remove([row for row in planned.vanished if row.id not in self._claimed], report)
        report.seconds = time.perf_counter() - started
        return report

    # --- workers ----------------------------------------------------------------------------------
    def _prepare(self, task: Task, force_decode: bool = False) -> Prepared:
        """Runs in a worker thread: read once, hash, decode and preprocess unless the hash makes it moot."""
        entry = task.entry
        out = Prepared(task)
        if task.caption_only:
            out.hash, out.same_content = task.row.content_hash, True
            out.caption = read_caption(entry.caption_path, self.options.max_text_chars)
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
        out.caption = read_caption(entry.caption_path, self.options.max_text_chars)
        if task.row is not None and task.row.content_hash == out.hash and task.row.status != PENDING \
                and not task.upgrade:
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
                                     self.options.max_text_chars, max_image_bytes=self.options.max_image_bytes,
                                     max_image_aspect=self.options.max_image_aspect,
                                     model_side=model_input_side(self.encoder))
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
            for prepared in bounded_map(pool, self._prepare, tasks, window, self._sound_bytes, budget // 2):
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
        with self.store.batch() as writes:
            for prepared in batch:
                self._write(writes, prepared, *vectors.get(id(prepared), (None, [])), report)
                task, caption = prepared.task, captions.get(id(prepared))
                writes.caption(task.row.id if task.row else None, task.entry.path, caption,
                               encoder_key(self.encoder.identity) if caption is not None else "")

    def _embed_captions(self, batch: list[Prepared]) -> dict[int, np.ndarray]:
        """Caption sidecars go through the text tower, unless the item kept both file and caption."""
        todo = [p for p in batch if p.caption and not p.error
                and not (p.same_content and p.task.row is not None and p.caption == p.task.row.caption)]
        if not todo:
            return {}
        return {id(p): v for p, v in zip(todo, self.encoder.encode_texts([p.caption for p in todo]))}

    def _embed(self, batch: list[Prepared]) -> dict[int, tuple[np.ndarray, list[Part]]]:
        """Resolve moves/copies first, then run the model once per modality for the rest: each item's vector
        and its parts (a long note's passages, a long sound's segments)."""
        out: dict[int, tuple[np.ndarray, list[Part]]] = {}
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
                out[id(p)] = vector, []
        if texts:
            passages = self._passages([p.decoded.text for p in texts])
            for p, vector, parts in zip(texts, self.encoder.encode_texts([p.decoded.text for p in texts]), passages):
                out[id(p)] = vector, parts
        sounds = [p for p in batch if p.decoded is not None and p.decoded.wave is not None and not p.error]
        if sounds:
            for p, sound in zip(sounds, self.audio_encoder.embed_waves([p.decoded.wave for p in sounds])):
                out[id(p)] = sound.vector, [Part(SEGMENT, start, end, v) for (start, end), v
                                            in zip(sound.spans, sound.segments)]
                p.decoded.wave = None
        return out

    def _passages(self, texts: list[str], chunk: int = 256) -> list[list[Part]]:
        """Each text's passages (none when the text tower reads all of it), embedded in bounded batches."""
        spans = [self.encoder.passages(text) for text in texts]
        pieces = [(row, start, end) for row, found in enumerate(spans) for start, end in found]
        out: list[list[Part]] = [[] for _ in texts]
        for first in range(0, len(pieces), chunk):
            window = pieces[first:first + chunk]
            vectors = self.encoder.encode_texts([texts[row][start:end] for row, start, end in window])
            for (row, start, end), vector in zip(window, vectors):
                out[row].append(Part(PASSAGE, start, end, vector))
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

    def _write(self, writes: Batch, prepared: Prepared, vector: np.ndarray | None, parts: list[Part],
               report: IndexReport) -> None:
        entry, row = prepared.task.entry, prepared.task.row
        item, moved = writes.item(row.id if row else None, entry.path, entry.modality, size=entry.size,
                                  mtime_ns=entry.mtime_ns, content_hash=prepared.hash, caption=prepared.caption)
        if prepared.same_content:
            if moved:
                report.moved += 1
            elif prepared.task.caption_only:
                report.updated += 1
            else:
                report.unchanged += 1
            return
        if prepared.error:
            writes.fail(item, prepared.error)
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
        if meta.get("copy_of") is not None:
            vector, parts = writes.copy_of(item, meta["copy_of"])
        else:
            writes.describe(item, meta, prepared.decoded.text if prepared.decoded else None)
        tower = self.audio_encoder if entry.modality == "audio" else self.encoder
        writes.content(item, vector, encoder_key(tower.identity) if vector is not None else "",
                       AUDIO_WAITING if entry.modality == "audio" else "waiting to be embedded", parts)

    def _remove(self, rows: list[Row], report: IndexReport) -> None:
        if rows:
            report.removed += self.store.remove_ids([row.id for row in rows])
