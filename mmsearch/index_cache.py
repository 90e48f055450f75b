"""The vector index as a checked cache of SQL: one part per modality (a FAISS file in the data dir, or a Milvus
collection with setting vector_store milvus:…), each checked against SQL on open and caught up or rebuilt
when stale, then saved; searched together as one index."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from contextlib import nullcontext
from typing import Any, ContextManager

from mmsearch.encoders.identity import encoder_key
from mmsearch.errors import first_line
from mmsearch.modalities import MODALITIES
from mmsearch.search.store import Store
from mmsearch.search.tables import FUSED
from mmsearch.search.batching import Batcher
from mmsearch.search.index_sync import SyncReport, check, sync
from mmsearch.search.partitioned import Partitioned
from mmsearch.search.index_types import AUTO, IndexState, auto_factory, nlist_of
from mmsearch.search.milvus_index import FACTORY as MILVUS, MilvusIndex, collection, connect, milvus_uri, require
from mmsearch.search.vector_index import FaissIndex
from mmsearch.search.vector_store import VectorStore

from .picture_cache import unfinished_writes
from .settings import Settings

INDEX_FILE = "vectors.faiss"
UNFINISHED = "vectors.*.tmp"  # an index file or sidecar being written (mmsearch.files), or left by a killed process


class IndexCache:
    def __init__(self, settings: Settings, store: Store, folder: Path):
        self.settings = settings
        self.store = store
        self.folder = folder
        self._parts: dict[str, VectorStore] = {}
        self._reports: dict[str, SyncReport] = {}
        self._main: Partitioned | None = None  # the parts together, as searched
        self._lock = threading.RLock()  # web threads may open the index at the same moment
        self.last_sync: SyncReport | None = None
        self.background = False  # a server: rebuild a part that outgrew its type beside it (index_type auto)
        self._retraining: dict[str, threading.Thread] = {}
        self._failed: dict[str, str] = {}  # part → the type a background build of it failed to make
        self.retrain_error: str | None = None
        self.milvus = milvus_uri(str(settings.vector_store), folder)  # None: FAISS files in the data dir
        if self.milvus is not None:
            require(self.milvus)  # now, not after an index run has embedded every file
        self._client: Any = None  # its MilvusClient: connect()

    def connect(self) -> None:
        """Reach the vector store now (a writer does before it changes anything: a locked milvus-lite file or
        an unreachable server is then one line before any file is embedded). Searches connect on first use."""
        if self.milvus is not None and self._client is None:
            self._client = connect(self.milvus)

    def file(self, space: str) -> Path:
        return self.folder / INDEX_FILE.replace(".", f".{space}.", 1)

    # --- where the parts live: FAISS files, or Milvus collections ------------------------------------
    def _milvus(self) -> Any:
        self.connect()
        return self._client

    def _collection(self, space: str) -> str:
        return collection(self.store.shared.database_id(), space)

    def _load(self, space: str, mapped: bool = False) -> VectorStore | None:
        return FaissIndex.load(self.file(space), mapped) if self.milvus is None else \
            MilvusIndex.load(self._milvus(), space, self._collection(space))

    def _new(self, state: IndexState) -> VectorStore:
        return FaissIndex(state) if self.milvus is None else \
            MilvusIndex.create(self._milvus(), state, self._collection(state.space))

    def _turn(self) -> ContextManager:
        """A Milvus collection is shared by every process on this database: one changes it at a time (the
        database's lock). FAISS files are each process's own cache, replaced whole (mmsearch.files)."""
        return self.store.shared.lock("vectors") if self.milvus is not None else nullcontext()

    def _cached(self, current: VectorStore | None, space: str) -> VectorStore | None:
        """The part to bring up to SQL: the one in memory, except that a shared collection's state is read
        again first (another process may have moved it on: its ids cached here are then stale)."""
        if self.milvus is None and current is not None:
            return current
        stored = self._load(space, self.settings.index_mmap)
        return current if current is not None and stored is not None and stored.state == current.state else stored

    def wanted(self, space: str = FUSED) -> IndexState:
        """The state an up-to-date part would have (generation aside)."""
        stored = self.store.get_meta("model")
        weights = json.dumps(self.settings.modality_weights, sort_keys=True)
        if stored is None:
            return IndexState(0, "", 0, self._factory(FUSED), weights, space, "vector")
        return IndexState(0, encoder_key(stored), int(stored["dim"]), self._factory(space), weights, space, "vector")

    def _factory(self, space: str) -> str:
        """index_type auto: chosen by this part's vector count (search.index_types). A factory string: as
        configured, except that a part with fewer vectors than the IVF type has lists is searched exactly
        (a few sounds never stop a large photo collection's IVF index)."""
        factory = self.settings.index_type
        if self.milvus is not None:
            return MILVUS
        if space == FUSED or factory == "Flat":
            return factory
        if factory == AUTO:
            return auto_factory(self.store.vector_count(space), self.settings.index_codes,
                                self.settings.ann_threshold)
        nlist = nlist_of(factory)
        return "Flat" if nlist and self.store.vector_count(space) < nlist else factory

    def index(self, refresh: bool = False) -> Partitioned:
        """The whole index, each part brought up to SQL first when ``refresh`` (or on first use)."""
        with self._lock:
            if self._main is not None and not refresh:
                return self._main
            parts = {space: self._part(space, refresh) for space in MODALITIES}
            try:
                (self.folder / INDEX_FILE).unlink(missing_ok=True)  # the single file of earlier versions
            except OSError:
                pass  # a read-only data dir: a stale cache nobody reads
            unfinished_writes(self.folder, UNFINISHED, remove=True)
            reports = [self._reports[space] for space in MODALITIES if space in self._reports]
            if refresh or self.last_sync is None:
                actions = {r.action for r in reports}
                self.last_sync = SyncReport(next((a for a in ("rebuilt", "caught-up") if a in actions), "fresh"),
                                            sum(r.added for r in reports), sum(r.removed for r in reports))
            generation = min(part.state.generation for part in parts.values())
            self._main = Partitioned(parts, replace(self.wanted(FUSED), generation=generation))
            return self._main

    def _part(self, space: str, refresh: bool) -> VectorStore:
        current = self._parts.get(space)
        if current is not None and not refresh:
            return current
        want = self.wanted(space)
        if want.dim == 0:
            index = FaissIndex(IndexState(self.store.generation(), "", 1, "Flat", want.weights, space, "vector"))
        else:
            with self._turn():
                cached = self._cached(current, space)
                later = self._retrain_later(cached, want)
                index, self._reports[space] = sync(cached, self.store, replace(want, factory=cached.state.factory)
                                                   if later else want, self._new)
                self._save(space, index, self._reports[space].action != "fresh")
            if later:
                self._start_retrain(space, want)
        self._parts[space] = index
        return index

    def _save(self, space: str, index: VectorStore, changed: bool) -> None:
        index.nprobe = self.settings.nprobe
        if self.background and index.batcher is None:  # a server: concurrent queries share one search call
            index.batcher = Batcher(index.plain_search)
        if changed:
            try:
                index.save(self.file(space))
            except OSError:
                pass  # only a cache: the next open rebuilds or catches up again

    # --- growing past a step of index_type auto ----------------------------------------------------
    def _retrain_later(self, cached: VectorStore | None, want: IndexState) -> bool:
        """In a server (``background``), a part that auto wants rebuilt as another type is caught up as it is
        and searched while the new one is built beside it; elsewhere it is rebuilt before it is used."""
        return self.background and cached is not None and self.settings.index_type == AUTO and \
            cached.state.factory != want.factory and cached.state.same_layout(replace(want, factory=cached.state.factory))

    def _start_retrain(self, space: str, want: IndexState) -> None:
        running = self._retraining.get(space)
        if running is not None and running.is_alive() or self._failed.get(space) == want.factory:
            return  # one build at a time; one that failed is not retried for the same type
        thread = threading.Thread(target=self._retrain, args=(space, want), name=f"retrain-{space}", daemon=True)
        self._retraining[space] = thread
        thread.start()

    def _retrain(self, space: str, want: IndexState) -> None:
        """Build the part anew from SQL (trained on a sample of it) without any lock, then swap it in whole:
        searches meanwhile use the old part, and what was committed during the build is caught up by the
        next refresh (the new part's generation is the one its build read)."""
        try:
            index, report = sync(None, self.store, want, self._new)
        except Exception as exc:  # noqa: BLE001 - a background thread: keep the old part, say why
            self.retrain_error = f"{space} index: rebuilding as {want.factory} failed: {first_line(exc)}"
            self._failed[space] = want.factory
            logging.getLogger("mmsearch").warning("%s; searching the %s part as it is", self.retrain_error,
                                                  space)
            return
        with self._lock:
            self._save(space, index, True)
            self._parts[space], self._reports[space], self._main = index, report, None
            self.retrain_error = None

    def retraining(self) -> list[str]:
        """The parts being rebuilt in the background now."""
        return sorted(space for space, thread in self._retraining.items() if thread.is_alive())

    def wait_retrained(self, timeout: float | None = None) -> bool:
        """Wait for background rebuilds; whether none is left running."""
        for thread in list(self._retraining.values()):
            thread.join(timeout)
        return not self.retraining()

    def is_current(self) -> bool:
        """Whether the loaded index reflects what SQL holds now (cheap: one meta read)."""
        generation = self.store.generation()
        return set(MODALITIES) <= set(self._parts) and \
            all(part.state.generation == generation for part in self._parts.values())

    def rebuild(self) -> SyncReport:
        with self._lock:
            self.drop()
            self.index(refresh=True)
        return self.last_sync

    def drop(self) -> list[str]:
        """Delete every part where it is kept (the FAISS files, or the collections): what went."""
        gone = []
        with self._lock, self._turn():
            for space in MODALITIES:
                if self.milvus is None:
                    paths = FaissIndex.files(self.file(space))
                    gone += [str(path) for path in paths if path.exists()]
                    for path in paths:
                        path.unlink(missing_ok=True)
                elif self._milvus().has_collection(self._collection(space)):
                    MilvusIndex.drop(self._milvus(), self._collection(space))
                    gone.append(f"collection {self._collection(space)} in {self.milvus}")
            self._parts.clear()
            self._main = None
        return gone

    def problems(self) -> list[str]:
        """Disagreements between the index files on disk and SQL, and writes a killed process left. Changes nothing."""
        left = unfinished_writes(self.folder, UNFINISHED)
        problems = [f"{len(left)} unfinished index file write(s) left by a stopped process, e.g. {left[0].name}"
                    ] if left else []
        if not self.wanted().dim:
            return problems
        return problems + [f"{space} index: {p}" for space in MODALITIES
                           for p in check(self._load(space, self.settings.index_mmap), self.store,
                                          self.wanted(space))]

    def stats(self) -> dict:
        """The index's type, counts and bytes: in RAM, what each part's vectors take where they are searched
        (VectorStore.memory_bytes); on disk, the FAISS files or the milvus-lite file (a server's: 0)."""
        index, want = self.index(), self.wanted()
        items = len(index.item_ids())
        ram = sum(part.memory_bytes() for part in index.parts.values())
        uri = self.milvus
        files = [self.file(space) for space in index.parts] if uri is None else \
            [] if "://" in uri else [Path(uri), *Path(uri).rglob("*")]
        disk = sum(path.stat().st_size for path in files if path.is_file())
        return {"type": want.factory, "ntotal": index.ntotal, "items": items, "dim": want.dim or None,
                "device": index.device, "ram_bytes": ram, "disk_bytes": disk,
                "ram_bytes_per_item": round(ram / items, 1) if items else None,
                "disk_bytes_per_item": round(disk / items, 1) if items else None,
                "by_modality": {space: {"ntotal": part.ntotal, "type": part.state.factory}
                                for space, part in index.parts.items()}}
