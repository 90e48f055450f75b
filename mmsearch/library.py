"""A data dir opened for use: the parts of the engine wired together, for the CLI, the web app and any
program that uses mmsearch as a library. Each job has its own home; this class only delegates:

- the folder and its write lock: mmsearch.datadir      - models and adopting them: mmsearch.models
- the vector index cache: mmsearch.index_cache         - training the audio tower: mmsearch.training
- SQL: mmsearch.search.store                           - ranking: mmsearch.search.query
- indexing folders: mmsearch.indexer.pipeline

Nothing here prints. Torch and open_clip are imported only when a model is needed, so stats, verify,
a no-op index run and --like stay fast.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np

from mmsearch.encoders.identity import describe
from mmsearch.search.query import Searcher, SearchResponse
from mmsearch.search.request import QueryPart, SearchRequest
from mmsearch.search.store import Store
from mmsearch.search.index_sync import SyncReport
from mmsearch.search.partitioned import Partitioned

from . import tagging, training
from .datadir import DataDir
from .errors import MMSearchError
from .index_cache import IndexCache
from .picture_cache import PICTURES, PictureCache
from .models import Models
from .settings import Settings


class TextVectors:
    """A bounded LRU of text-query vectors (as Immich keeps), safe for the web server's threads: keyed by the
    encoder's identity and the exact text, one per Library (so never shared across data dirs). It hands out
    copies, so a caller cannot change what it holds. Size 0 keeps nothing."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
        if self.size <= 0:
            return make()
        with self._lock:
            held = self._entries.get(key)
            if held is not None:
                self._entries.move_to_end(key)
                return held.copy()
        vector = np.array(make(), np.float32)  # our own copy: the encoder's array may be reused
        vector.setflags(write=False)
        with self._lock:  # two threads missing the same text both encode it; the entry is the same
            self._entries[key] = vector
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return vector.copy()


def unit(values: Any) -> np.ndarray:
    """A vector part's numbers as a (1, dim) unit vector; scaled by the largest first, so huge or tiny numbers
    neither overflow nor vanish."""
    vector = np.asarray(values, np.float64).reshape(-1)
    vector = vector / np.abs(vector).max()
    return (vector / np.linalg.norm(vector)).astype(np.float32).reshape(1, -1)


class Library:
    def __init__(self, settings: Settings, existing: bool = False):
        """``existing``: only open a collection that is there (read-only commands); never create one."""
        self.settings = settings
        self.data_path = settings.data_path
        self.data_dir = DataDir(self.data_path, create=not existing or bool(settings.db_url))
        self.store = Store(settings.database_url)
        self.models = Models(settings, self.store)
        self.cache = IndexCache(settings, self.store, self.data_path)
        self.pictures = PictureCache(self.data_path / PICTURES, self.store)
        self.text_vectors = TextVectors(settings.query_cache_size)

    # --- delegated, for callers that only want one thing --------------------------------------------
    def encoder(self) -> Any:
        return self.models.encoder()

    def audio_encoder(self) -> Any:
        return self.models.audio_encoder()

    def query_encoder(self, kind: str) -> Any:
        return self.models.for_query(kind)

    def index(self, refresh: bool = False) -> Partitioned:
        return self.cache.index(refresh)

    @property
    def last_sync(self) -> SyncReport | None:
        return self.cache.last_sync

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """The data dir's writers' lock; the vector store reached first (IndexCache.connect)."""
        with self.data_dir.write_lock():
            self.cache.connect()
            yield

    # --- queries ----------------------------------------------------------------------------------
    def vector_dims(self) -> tuple[int, str]:
        """How many numbers this data dir's vectors have, and its model: the one it was indexed with, else
        the one the settings choose."""
        stored = self.models.stored() or self.models.spec().identity()
        return int(stored["dim"]), describe(stored)

    def check_vectors(self, parts: Sequence[QueryPart]) -> None:
        """Vector parts must have the data dir's dimension (only the data dir knows it): one-line error else."""
        vectors = [(n, len(p.value)) for n, p in enumerate(parts, start=1) if p.kind == "vector"]
        if vectors:
            dims, model = self.vector_dims()
            wrong = next(((n, size) for n, size in vectors if size != dims), None)
            if wrong is not None:
                raise MMSearchError(f"query part {wrong[0]} (a vector) has {wrong[1]} numbers, not {dims}: this "
                                    f"data dir's model, {model}, makes vectors of {dims} dimensions")

    def embed_query(self, kind: str, value: Any) -> np.ndarray:
        """One query part as a (1, dim) vector: text (kept in the LRU of setting query_cache_size), the
        bytes of an image or a sound file, or a vector's numbers (normalised)."""
        from mmsearch.indexer.decode import DecodeError, decode_audio, decode_image, model_input_side
        if kind == "text":
            text = str(value)
            if not text.strip():
                raise MMSearchError("the query text is empty")
            spec = self.models.spec()
            return self.text_vectors.get((spec.name, spec.pretrained, spec.dim, text),
                                         lambda: self.encoder().encode_texts([text]))
        if kind == "vector":
            part = QueryPart("vector", value)
            self.check_vectors([part])
            return unit(part.value)
        try:
            if kind == "image":
                encoder, settings = self.encoder(), self.settings
                return encoder.encode_images([decode_image(value, settings.max_image_pixels, settings.max_image_bytes,
                                                           model_input_side(encoder), settings.max_image_aspect).image])
            if kind == "audio":
                encoder = self.audio_encoder()
                wave = decode_audio(value, encoder.config.sample_rate, self.settings.max_audio_seconds).wave
                return encoder.encode_waves([wave])
        except DecodeError as exc:
            raise MMSearchError(f"query {kind}: {exc}") from None
        raise MMSearchError(f"unknown query kind {kind!r}")

    def searcher(self) -> Searcher:
        return Searcher(self.store, self.index())

    def search(self, request: SearchRequest, embed: Callable[[str, Any], np.ndarray] | None = None
               ) -> SearchResponse:
        """A multi-part search with fusion, filters and explanations; ``embed`` (kind, value) → vector
        replaces embed_query. Vector parts are checked against the data dir's dimension before anything
        is embedded or searched, and a tag_set filter against the stored sets (an unknown one is an error)."""
        self.check_vectors(request.parts)
        if request.filters.tag_set is not None:
            self.store.tags.check(request.filters.tag_set)
        embed = embed or self.embed_query

        def vector(part: QueryPart) -> np.ndarray:  # a vector part checked above needs no second SQL read
            return unit(part.value) if part.kind == "vector" else embed(part.kind, part.value)
        return self.searcher().search(request, vector)

    # --- changes ----------------------------------------------------------------------------------
    def run_index(self, roots: Sequence[str], reembed: bool = False, progress: bool = False,
                  reembed_audio: bool = False, engine: str = "local", num_gpus: float = 0.0, actors: int = 0):
        """Index ``roots``. ``engine``: local (decoding threads, the towers in this process) or ray (Ray Data
        tasks and ``actors`` model actors of ``num_gpus`` GPUs each; indexer/ray_engine.py)."""
        from mmsearch.indexer.pipeline import Indexer, IndexerOptions
        if engine not in ("local", "ray"):
            raise MMSearchError(f"unknown engine {engine!r}: use local or ray")
        if engine == "ray":
            from mmsearch.indexer.ray_engine import RayEngine, Towers, require_ray
            require_ray()  # before the lock and the models: a missing ray is one line and changes nothing
        missing = [r for r in roots if not os.path.exists(os.path.expanduser(str(r)))]
        if missing:
            raise MMSearchError(f"path not found: {missing[0]}")
        with self.write_lock():
            self.models.adopt(reembed, reembed_audio)
            options = IndexerOptions(batch_size=self.settings.batch_size, workers=self.settings.workers,
                                     max_image_pixels=self.settings.max_image_pixels,
                                     max_image_bytes=self.settings.max_image_bytes,
                                     max_image_aspect=self.settings.max_image_aspect,
                                     max_text_chars=self.settings.max_text_chars,
                                     max_audio_seconds=self.settings.max_audio_seconds, progress=progress)
            audio = self.audio_encoder if self.models.audio_identity() else None
            runner = None
            if engine == "ray":
                towers = Towers(self.models.spec(), self.settings.device, self.settings.cache_dir or None,
                                self.models.audio_identity())
                runner = RayEngine(towers, num_gpus, actors, self.settings.batch_size)
            report = Indexer(self.store, self.encoder, options, audio, runner).run(roots)
            if report.added or report.removed or report.updated or report.moved:
                self.store.analyze()
            self.index(refresh=True)
            if self.settings.tag_on_index and (report.added or report.updated):
                tagged = tagging.tag_changed(self, report.scan_errors)  # a set that cannot tag is named, not fatal
                report.tagged = len(set().union(*(r.tagged for r in tagged)))
        return report

    def remove(self, paths: Sequence[str]) -> int:
        with self.write_lock():
            ids: list[int] = []
            for path in paths:
                ids += self.store.ids_under(os.path.abspath(os.path.expanduser(path)))
            removed = self.store.remove_ids(ids)
            if removed:
                self.store.analyze()
            self.index(refresh=True)
        return removed

    def rebuild_index(self) -> SyncReport:
        return self.cache.rebuild()

    def train_audio(self, manifest: str, options: Any, checkpoint: str | None = None,
                    log: Callable[[str], None] = lambda _: None):
        with self.write_lock():
            return training.train_audio(self.models, self.data_path, manifest, options, checkpoint, log)

    def fit_clap_bridge(self, checkpoint: str, captions_file: str, method: str = "procrustes",
                        output: str | None = None) -> dict:
        with self.write_lock():
            return training.fit_clap_bridge(self.models, self.data_path, checkpoint, captions_file, method, output)

    def classify(self, labels: list[str], name: str, modalities: Sequence[str] | None = None, top: int = 1,
                 min_score: float | None = None) -> tagging.TagReport:
        with self.write_lock():
            return tagging.zero_shot(self, labels, name, modalities, top, min_score)

    def train_classifier(self, labelled: Any, name: str, fusion: str | None = None, folds: int = 5,
                         threshold: float = 0.5, log: Callable[[str], None] = lambda _: None) -> tagging.TagReport:
        with self.write_lock():
            return tagging.train(self, labelled, name, fusion, folds, threshold, log)

    def delete_tag_set(self, name: str) -> bool:
        """Forget a tag set's tags, and its trained model's files."""
        with self.write_lock():
            deleted = self.store.tags.delete(name)
            if deleted and tagging.NAME.match(name):
                for suffix in (".safetensors", ".json"):
                    tagging.model_stem(self, name).with_suffix(suffix).unlink(missing_ok=True)
            return deleted

    # --- health -----------------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Disagreements between SQL and its caches (the vector index files, the picture cache), and within
        SQL. Changes nothing."""
        return self.cache.problems() + self.pictures.problems() + self._sql_problems()

    def _sql_problems(self) -> list[str]:
        want = self.cache.wanted()
        return self.store.vector_problems(want.encoder, want.dim)

    def repair(self) -> dict[str, list[str]]:
        """Rebuild every cache from SQL: the vector index files anew, the picture cache emptied (drawn again
        on demand); then verify again. A problem in SQL itself is no cache's: it is left, and reported.
        Returns what verify found, what was repaired, and the problems left."""
        with self.write_lock():
            found, repaired, left = self.verify(), [], []
            try:
                repaired.append(f"rebuilt the vector index from SQL: {self.cache.rebuild().added} vectors")
            except (MMSearchError, ValueError) as exc:  # ValueError: SQL holds vectors of mixed sizes
                left.append(f"cannot rebuild the vector index from SQL: {exc}")
            if any("full-text index" in p for p in found):
                self.store.rebuild_lexical()
                repaired.append("made the full-text index again from the items")
            removed = self.pictures.clear()
            if removed:
                repaired.append("emptied the picture cache, to be drawn again on demand: " +
                                ", ".join(f"{n} {state}" for state, n in removed.items()))
            sql = self._sql_problems()
            left += [f"in SQL itself, not a cache, so not repaired: {p}" for p in sql]
            left += [p for p in self.verify() if p not in sql]
        return {"found": found, "repaired": repaired, "problems": left}

    def stats(self) -> dict[str, Any]:
        return {**self.store.counts(), "model": self.models.stored(), "index": self.cache.stats()}
