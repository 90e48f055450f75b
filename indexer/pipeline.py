"""Incremental indexing: scan, diff against SQL, prepare and embed each batch (an engine's job), commit.

Each batch is one transaction (rows, vectors and the generation bump together), so a killed run
leaves a consistent database and the next run picks up where it stopped. Planning, moves and copies, and
committing are this module's whatever the engine; an engine only turns the planned tasks into batches of
prepared, embedded files: LocalEngine here (decoding threads, the towers in this process), RayEngine in
indexer/ray_engine.py (Ray Data tasks and model actors).
"""
from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Protocol

from tqdm import tqdm

from mmsearch.encoders.identity import encoder_key
from mmsearch.search.store import Store
from mmsearch.search.tables import OK, PENDING
from mmsearch.search.writes import Batch

from .bounded import bounded_map
from .decode import Decoded, model_input_side
from .plan import IndexReport, Row, Task, plan
from .prepare import IndexerOptions, Prepared, Preparer, embed, embed_captions, wants_caption
from .scan import absolute_roots, scan

__all__ = ["AUDIO_WAITING", "Engine", "Indexer", "IndexerOptions", "LocalEngine", "Prepared"]
AUDIO_WAITING = "waiting for an audio encoder"


# Decoded sound in memory at once (being decoded ahead, or waiting in a batch): long recordings at the
# max_audio_seconds cap are ~38 MB each, and a window of 64 read-ahead files would otherwise hold GBs.
SOUND_BUDGET = 256 * 2**20


class Engine(Protocol):
    def batches(self, indexer: "Indexer", tasks: list[Task]) -> Iterator[list[Prepared]]:
        """The tasks as batches of prepared files, embedded or not: the indexer embeds here what is left."""


class Indexer:
    """Indexes folders into a Store. The encoders are loaded only when something needs embedding;
    without ``get_audio_encoder`` sounds are stored with metadata and wait for an audio tower. ``engine``
    prepares and embeds the batches (LocalEngine by default); this class plans and commits them."""

    def __init__(self, store: Store, get_encoder: Callable[[], Any], options: IndexerOptions,
                 get_audio_encoder: Callable[[], Any] | None = None, engine: Engine | None = None):
        self.store = store
        self.get_encoder = get_encoder
        self.get_audio_encoder = get_audio_encoder
        self.options = options
        self.engine = engine or LocalEngine()
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
        self.by_hash = planned.by_hash
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
            self.prepare = self.preparer(self.by_hash)
            self._process(tasks, report)
        self._remove([row for row in planned.vanished if row.id not in self._claimed], report)
        report.seconds = time.perf_counter() - started
        return report

    def preparer(self, known: Any) -> Preparer:
        """How this run reads and decodes a file, for any engine: the loaded towers' preprocessing, input side
        and sample rate; ``known``: the stored content hashes (a container of them)."""
        return Preparer(self.options, self.encoder.preprocess_image if self.encoder is not None else None,
                        model_input_side(self.encoder),
                        self.audio_encoder.config.sample_rate if self.audio_encoder is not None else None, known)

    def _process(self, tasks: list[Task], report: IndexReport) -> None:
        bar = tqdm(total=len(tasks), unit="file", disable=not self.options.progress, leave=False)
        # closing: an engine's decoding threads or Ray datasets stop when a commit fails
        with bar, contextlib.closing(self.engine.batches(self, tasks)) as batches:
            for batch in batches:
                self._commit(batch, report)
                bar.update(len(batch))

    # --- writing ----------------------------------------------------------------------------------
    def _commit(self, batch: list[Prepared], report: IndexReport) -> None:
        if not batch:
            return
        batch = self._embed(batch)
        key = encoder_key(self.encoder.identity) if self.encoder is not None else ""
        with self.store.batch() as writes:
            for prepared in batch:
                self._write(writes, prepared, report)
                task = prepared.task
                caption = prepared.caption_vector if wants_caption(prepared) else None
                writes.caption(task.row.id if task.row else None, task.entry.path, caption,
                               key if caption is not None else "")

    def _embed(self, batch: list[Prepared]) -> list[Prepared]:
        """Resolve moves/copies first (here, in order, as only this process knows what earlier batches
        claimed), decoding the new paths that turn out to need it after all (a copy of a failed file, say),
        then embed in this process what the engine left unembedded; returns what to commit now."""
        for prepared in batch:
            if prepared.task.row is None and prepared.hash and prepared.decoded is None and not prepared.error:
                claimed = self._claim_move(prepared)
                needs_vector = claimed is not None and not prepared.same_content  # a moved item still pending
                if needs_vector or (claimed is None and self._copy_source(prepared) is None):
                    again = self.prepare(prepared.task, force_decode=True)
                    prepared.decoded, prepared.pixels, prepared.error = again.decoded, again.pixels, again.error
        embed(batch, lambda: self.encoder, lambda: self.audio_encoder)
        embed_captions(batch, lambda: self.encoder)
        return batch

    def _claim_move(self, prepared: Prepared) -> Row | None:
        for row in self.by_hash.get(prepared.hash, ()):
            gone = row.id in self._vanished_ids or (row.path not in self._scanned and not os.path.exists(row.path))
            if gone and row.id not in self._claimed and row.modality == prepared.task.entry.modality:
                self._claimed.add(row.id)
                prepared.task = Task(prepared.task.entry, row)
                prepared.same_content = not (row.status == PENDING and row.modality in self.embeddable)
                return row
        return None

    def _copy_source(self, prepared: Prepared) -> Row | None:
        for row in self.by_hash.get(prepared.hash, ()):
            if row.status == OK and row.modality == prepared.task.entry.modality:
                prepared.decoded = Decoded(meta={"copy_of": row.id})
                return row
        return None

    def _write(self, writes: Batch, prepared: Prepared, report: IndexReport) -> None:
        entry, row = prepared.task.entry, prepared.task.row
        vector, parts = prepared.vector, prepared.parts
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


class LocalEngine:
    """Decoding in a pool of threads, bounded by count and by the decoded sound held; the towers in this
    process, one batch at a time between decoding and committing."""

    def batches(self, indexer: Indexer, tasks: list[Task]) -> Iterator[list[Prepared]]:
        options = indexer.options
        prepare = indexer.prepare
        workers = options.workers or os.cpu_count() or 1
        batch: list[Prepared] = []
        held = 0  # estimated bytes of decoded sound in the batch
        budget = max(SOUND_BUDGET, int(options.max_audio_seconds * 16_000 * 4))  # one capped sound fits
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmsearch-decode")
        try:
            window = max(options.batch_size * 2, workers * 4)
            # Half the budget for sounds being decoded ahead, half for the batch waiting for the tower
            for prepared in bounded_map(pool, prepare, tasks, window, prepare.sound_bytes, budget // 2):
                batch.append(prepared)
                held += prepare.sound_bytes(prepared.task)
                if len(batch) >= options.batch_size or held >= budget // 2:
                    yield batch
                    batch, held = [], 0
            if batch:
                yield batch
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
