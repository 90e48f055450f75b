"""One Library per app process, shared by all request threads.

The encoders are loaded once (on first use, under a lock). Searches read the vector index
concurrently; when another process (``manage.py index``) has changed SQL, the generation counter
in ``meta`` moves and the next request re-syncs the FAISS cache from SQL (cheap: only the vectors
newer than the cached generation are read) while holding the write side of a readers-writer lock.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from mmsearch.settings import Settings


class RWLock:
    """Many readers or one writer; a waiting writer holds new readers back (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Shared:
    """The app's Library, kept in step with SQL (see module docstring)."""

    def __init__(self, settings: Settings, refresh_interval: float = 0.0):
        self.settings = settings
        self.refresh_interval = refresh_interval  # seconds between generation checks (0: every request)
        self._open_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self.rw = RWLock()
        self._library: Any = None
        self._last_check = 0.0
        self.refreshes = 0

    def library(self):
        if self._library is None:
            with self._open_lock:
                if self._library is None:
                    from mmsearch.library import Library
                    library = Library(self.settings)
                    library.cache.background = True  # an index that outgrew its type is rebuilt beside it
                    self._library = library
        return self._library

    def _current(self) -> None:
        """Re-sync the vector index when SQL's generation has moved since it was loaded."""
        now = time.monotonic()
        if self.refresh_interval and now - self._last_check < self.refresh_interval:
            return
        self._last_check = now
        library = self.library()
        if library.cache.is_current():
            return
        with self.rw.write():
            if not library.cache.is_current():
                library.index(refresh=True)
                self.refreshes += 1

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """The library, with an up-to-date index, for a search or a lookup."""
        self._current()
        with self.rw.read():
            yield self.library()

    @contextmanager
    def writing(self) -> Iterator[Any]:
        """The library, alone: for uploads and deletions done by this process."""
        with self.rw.write():
            yield self.library()

    def load_models(self, audio: bool = False) -> None:
        """Load the encoders once per process (never per request)."""
        library = self.library()
        with self._model_lock:
            library.encoder()
            if audio:
                library.audio_encoder()

    def embed(self, kind: str, value: Any) -> np.ndarray:
        """A query part's vector, the models loaded once (text vectors: the library's LRU cache,
        setting query_cache_size)."""
        if kind in ("text", "image"):
            self.load_models()
        elif kind == "audio":
            self.load_models(audio=True)
        return self.library().embed_query(kind, value)
