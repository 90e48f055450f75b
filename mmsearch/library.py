"""A data dir opened for use: store, model identity, vector index and indexer wired together.

The CLI and the web app both go through this class; nothing here prints. Torch and open_clip are
imported only by the methods that need a model, so stats, verify and --like stay fast.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import faiss
import numpy as np
from sqlalchemy import func, select

from search.query import Searcher, SearchResponse
from search.request import SearchRequest
from search.store import CONTENT, FUSED, MODALITY_SPACES, OK, Item, Store, Vector
from search.vector_index import FaissIndex, IndexState, Partitioned, SyncReport, check, sync
from encoders.identity import RANDOM, ModelSpec, describe, encoder_key, file_checksum

from .errors import DataDirError, LockedError, MMSearchError, ModelLoadError, ModelMismatchError
from .settings import Settings

INDEX_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"


class Library:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.data_path = settings.data_path
        _prepare_data_dir(self.data_path)
        self.store = Store(settings.database_url)
        self._encoder: Any = None
        self._audio_encoder: Any = None
        self._spec: Any = None
        self._indexes: dict[str, FaissIndex] = {}  # the index's parts, by modality
        self._reports: dict[str, SyncReport] = {}
        self._main: Partitioned | None = None  # the parts together, as searched
        self._index_lock = threading.RLock()  # web threads may open the index at the same moment
        self.last_sync: SyncReport | None = None

    # --- model ------------------------------------------------------------------------------------
    def stored_model(self) -> dict | None:
        return self.store.get_meta("model")

    def model_spec(self, allow_change: bool = False):
        """The model to use: the flags' choice, else the one the data dir was built with."""
        if self._spec is None:
            stored, source = self.stored_model(), self.store.get_meta("model_source") or {}
            name = (self.settings.model if self.settings.explicit("model") or not stored
                    else source.get("name", self.settings.model))
            pretrained = self.settings.pretrained
            if not self.settings.explicit("pretrained") and stored and name == source.get("name"):
                pretrained = source.get("pretrained", "")
            if stored and (name, pretrained) == (source.get("name"), source.get("pretrained")):
                # validated when it was adopted; skipping open_clip keeps a no-op index run fast
                spec = ModelSpec(name, pretrained, int(stored["dim"]))
                if spec.is_file and not os.path.isfile(pretrained):
                    raise ModelLoadError(f"checkpoint file {pretrained} that this data dir was indexed with is "
                                         f"missing; pass its new location with --pretrained FILE")
            else:
                from encoders.loading import resolve_spec
                spec = resolve_spec(name, pretrained)
            identity = spec.identity()
            if stored and identity != stored and not allow_change:
                raise ModelMismatchError(
                    f"data dir {self.data_path} was indexed with {describe(stored)}, not {describe(identity)}; "
                    f"run 'index --reembed' to re-embed everything with the new model, or pick the old one")
            self._spec = spec
        return self._spec

    def audio_identity(self) -> dict | None:
        """The audio tower to use, without loading it: a chosen checkpoint, the data dir's trained one, or a
        random tower beside random image/text weights. None: sounds wait for one."""
        path = self.settings.audio_checkpoint or (self.store.get_meta("audio_tower") or {}).get("path")
        spec = self.model_spec()
        if path:
            path = os.path.abspath(os.path.expanduser(path))
            if not os.path.isfile(path):
                raise ModelLoadError(f"audio checkpoint {path} does not exist")
            return {"name": "audio", "checksum": file_checksum(path), "dim": spec.dim, "path": path}
        if spec.pretrained == RANDOM:
            return {"name": "audio", "pretrained": "random-tiny" if spec.name == "tiny" else RANDOM, "dim": spec.dim}
        return None

    def audio_encoder(self):
        if self._audio_encoder is None:
            from encoders.audio import AudioEncoder, build_tower, default_config, load_tower
            from encoders.bridge import ClapAudioEncoder, is_bridge, load_bridge, load_clap
            from encoders.loading import pick_device
            identity = self.audio_identity()
            if identity is None:
                raise MMSearchError("no audio tower: train one with 'train-audio' or pass --audio-checkpoint FILE")
            key = {k: v for k, v in identity.items() if k != "path"}
            if "path" in identity and is_bridge(identity["path"]):
                weights, meta = load_bridge(Path(identity["path"]))
                if weights.shape[1] != identity["dim"]:
                    raise ModelLoadError(f"CLAP bridge {identity['path']} maps to {weights.shape[1]}-d; "
                                         f"the image/text model makes {identity['dim']}-d")
                clap = load_clap(meta["clap_checkpoint"], str(pick_device(self.settings.device)))
                self._audio_encoder = ClapAudioEncoder(clap, weights, key)
                return self._audio_encoder
            if "path" in identity:
                tower, _ = load_tower(Path(identity["path"]))
                if tower.config.embed_dim != identity["dim"]:
                    raise ModelLoadError(f"audio checkpoint {identity['path']} makes {tower.config.embed_dim}-d "
                                         f"vectors; the image/text model makes {identity['dim']}-d")
            else:
                tower = build_tower(default_config(identity["dim"], small=identity["pretrained"] == "random-tiny"))
            self._audio_encoder = AudioEncoder(tower, pick_device(self.settings.device), key)
        return self._audio_encoder

    def _adopt_audio(self, reembed: bool) -> None:
        """A different audio tower (or --reembed-audio) sends every sound back to be embedded again."""
        identity = self.audio_identity()
        key = encoder_key(identity) if identity else None
        if key == self.store.get_meta("audio_key") and not reembed:
            return  # unchanged: the indexer loads the tower only if there are sounds to embed
        if identity is not None:
            self.audio_encoder()  # a tower that cannot load must not discard the sounds' vectors
        with self.store.session() as session:
            self.store.mark_pending(session, modality="audio")
            self.store._set(session, "audio_key", key)

    def encoder(self):
        if self._encoder is None:
            from encoders.loading import load_clip_encoder
            self._encoder = load_clip_encoder(self.model_spec(), self.settings.device,
                                              self.settings.cache_dir or None)
        return self._encoder

    def _adopt_model(self, reembed: bool) -> None:
        """Record the model in SQL; with reembed, a different model replaces the old and all items wait."""
        spec = self.model_spec(allow_change=reembed)
        identity = spec.identity()
        stored = self.stored_model()
        source = {"name": spec.name, "pretrained": spec.pretrained}
        if stored == identity:
            if self.store.get_meta("model_source") != source:  # same weights, file moved
                self.store.set_meta("model_source", source)
            return
        self.encoder()  # load the weights first: a model that cannot load must not replace the stored one
        with self.store.session() as session:
            if stored is not None:
                self.store.mark_pending(session)
            self.store._set(session, "model", identity)
            self.store._set(session, "model_source", source)

    # --- vector index -----------------------------------------------------------------------------
    def index_file(self, space: str) -> Path:
        return self.data_path / INDEX_FILE.replace(".", f".{space}.", 1)

    def _wanted_index(self, space: str = FUSED) -> IndexState:
        stored = self.stored_model()
        weights = json.dumps(self.settings.modality_weights, sort_keys=True)
        if stored is None:
            return IndexState(0, "", 0, self.settings.index_type, weights, space)
        return IndexState(0, encoder_key(stored), int(stored["dim"]), self._factory(space), weights, space)

    def _factory(self, space: str) -> str:
        """The configured index type; a part with fewer vectors than the IVF type has lists is searched
        exactly instead (a few sounds never stop a large photo collection's IVF index)."""
        factory = self.settings.index_type
        if space == FUSED or factory == "Flat":
            return factory
        try:
            ivf = faiss.try_extract_index_ivf(faiss.index_factory(8, factory, faiss.METRIC_INNER_PRODUCT))
        except RuntimeError:
            return factory  # invalid: building it reports why
        return "Flat" if ivf is not None and self.store.vector_count(space) < ivf.nlist else factory

    def index(self, refresh: bool = False) -> Partitioned:
        """The vector index (one part per modality), each part checked against SQL and caught up or rebuilt
        when stale, then saved."""
        with self._index_lock:
            if self._main is not None and not refresh:
                return self._main
            parts = {space: self._part(space, refresh) for space in MODALITY_SPACES}
            try:
                (self.data_path / INDEX_FILE).unlink(missing_ok=True)  # the single file of earlier versions
            except OSError:
                pass  # a read-only data dir: a stale cache nobody reads
            reports = [self._reports[space] for space in MODALITY_SPACES if space in self._reports]
            if refresh or self.last_sync is None:
                actions = {r.action for r in reports}
                self.last_sync = SyncReport(next((a for a in ("rebuilt", "caught-up") if a in actions), "fresh"),
                                            sum(r.added for r in reports), sum(r.removed for r in reports))
            generation = min(part.state.generation for part in parts.values())
            self._main = Partitioned(parts, replace(self._wanted_index(FUSED), generation=generation))
            return self._main

    def _part(self, space: str, refresh: bool) -> FaissIndex:
        current = self._indexes.get(space)
        if current is not None and not refresh:
            return current
        want = self._wanted_index(space)
        if want.dim == 0:
            index = FaissIndex(IndexState(self.store.generation(), "", 1, "Flat", want.weights, space))
        else:
            cached = current if current is not None else FaissIndex.load(self.index_file(space))
            index, self._reports[space] = sync(cached, self.store, want)
            index.nprobe = self.settings.nprobe
            if self._reports[space].action != "fresh":
                try:
                    index.save(self.index_file(space))
                except OSError:
                    pass  # only a cache: the next open rebuilds or catches up again
        self._indexes[space] = index
        return index

    def index_is_current(self) -> bool:
        """Whether the loaded index reflects what SQL holds now (cheap: one meta read)."""
        generation = self.store.generation()
        return set(MODALITY_SPACES) <= set(self._indexes) and \
            all(part.state.generation == generation for part in self._indexes.values())

    def rebuild_index(self) -> SyncReport:
        with self._index_lock:
            for space in MODALITY_SPACES:
                self.index_file(space).unlink(missing_ok=True)
            self._indexes.clear()
            self._main = None
            self.index(refresh=True)
        return self.last_sync

    def verify(self) -> list[str]:
        """Disagreements between SQL and the vector index file, and within SQL. Changes nothing."""
        want = self._wanted_index()
        encoder, dim = want.encoder, want.dim
        problems: list[str] = []
        if dim:
            for space in MODALITY_SPACES:
                problems += [f"{space} index: {p}" for p in
                             check(FaissIndex.load(self.index_file(space)), self.store, self._wanted_index(space))]
        with self.store.session() as session:
            audio_key = self.store._get(session, "audio_key")
            own_audio = (Vector.part == CONTENT) & (Item.modality == "audio")
            expected = own_audio & (Vector.encoder == audio_key) | ~own_audio & (Vector.encoder == encoder)
            wrong = session.scalar(select(func.count()).select_from(Vector).join(Item).where(
                (Vector.dim != dim) | ~expected))
            if wrong:
                problems.append(f"{wrong} vectors were made by another model or have the wrong dimension")
            orphans = session.scalar(select(func.count()).select_from(Item).where(
                Item.status == OK, ~Item.vectors.any(Vector.part == CONTENT)))
            if orphans:
                problems.append(f"{orphans} items marked ok have no vector")
        return problems

    # --- queries ----------------------------------------------------------------------------------
    def query_encoder(self, kind: str):
        return self.audio_encoder() if kind == "audio" else self.encoder()

    def embed_query(self, kind: str, value: str | bytes | int) -> np.ndarray:
        """One query part as a (1, dim) vector: text, or the bytes of an image or a sound file."""
        from indexer.decode import DecodeError, decode_audio, decode_image
        if kind == "text":
            if not str(value).strip():
                raise MMSearchError("the query text is empty")
            return self.encoder().encode_texts([str(value)])
        try:
            if kind == "image":
                return self.encoder().encode_images([decode_image(value, self.settings.max_image_pixels).image])
            if kind == "audio":
                encoder = self.audio_encoder()
                wave = decode_audio(value, encoder.config.sample_rate, self.settings.max_audio_seconds).wave
                return encoder.encode_waves([wave])
        except DecodeError as exc:
            raise MMSearchError(f"query {kind}: {exc}") from None
        if kind == "item":
            return self.searcher().item_vector(int(value)).reshape(1, -1)
        raise MMSearchError(f"unknown query kind {kind!r}")

    def search(self, request: SearchRequest) -> SearchResponse:
        """A multi-part search with fusion, filters and explanations (search.request.SearchRequest)."""
        return self.searcher().search(request, lambda part: self.embed_query(part.kind, part.value))

    # --- operations -------------------------------------------------------------------------------
    def searcher(self) -> Searcher:
        return Searcher(self.store, self.index())

    def run_index(self, roots: Sequence[str], reembed: bool = False, progress: bool = False,
                  reembed_audio: bool = False):
        from indexer.pipeline import Indexer, IndexerOptions
        missing = [r for r in roots if not os.path.exists(os.path.expanduser(str(r)))]
        if missing:
            raise MMSearchError(f"path not found: {missing[0]}")
        with self.write_lock():
            self._adopt_model(reembed)
            self._adopt_audio(reembed_audio)
            options = IndexerOptions(batch_size=self.settings.batch_size, workers=self.settings.workers,
                                     max_image_pixels=self.settings.max_image_pixels,
                                     max_text_chars=self.settings.max_text_chars,
                                     max_audio_seconds=self.settings.max_audio_seconds, progress=progress)
            audio = self.audio_encoder if self.audio_identity() else None
            report = Indexer(self.store, self.encoder, options, audio).run(roots)
            if report.added or report.removed or report.updated or report.moved:
                self.store.analyze()
            self.index(refresh=True)
        return report

    def train_audio(self, manifest: str, options: Any, checkpoint: str | None = None,
                    log: Callable[[str], None] = lambda _: None):
        """Train the audio tower on (audio, caption[, image]) pairs against this data dir's frozen
        image/text model, save it here and make it the data dir's audio tower."""
        from encoders.audio import build_tower, default_config, load_tower
        from encoders.audio_training import Trainer, read_manifest
        from indexer.decode import DecodeError, decode_audio, decode_image
        pairs = read_manifest(manifest)
        with self.write_lock():
            self._adopt_model(False)
            spec, encoder = self.model_spec(), self.encoder()
            current = self.audio_identity()
            if current and "path" in current:
                tower, _ = load_tower(Path(current["path"]))  # teach the active tower more sounds
            else:
                tower = build_tower(default_config(spec.dim, small=spec.name == "tiny"))
            waves, kept = [], []
            for pair in pairs:
                try:
                    with open(pair.audio, "rb") as handle:
                        waves.append(decode_audio(handle.read(), tower.config.sample_rate, options.max_seconds).wave)
                    kept.append(pair)
                except (OSError, DecodeError) as exc:
                    log(f"skipped {pair.audio}: {exc}")
            if len(kept) < 4:
                raise MMSearchError(f"only {len(kept)} usable pairs in {manifest}; at least 4 are needed")
            captions = sorted({p.caption for p in kept})
            text = np.concatenate([encoder.encode_texts(captions[i:i + 64]) for i in range(0, len(captions), 64)])
            images: dict[int, np.ndarray] = {}
            for i, pair in enumerate(kept):
                if pair.image:
                    try:
                        with open(pair.image, "rb") as handle:
                            picture = decode_image(handle.read(), self.settings.max_image_pixels).image
                        images[i] = encoder.encode_images([picture])[0]
                    except (OSError, DecodeError) as exc:
                        log(f"image ignored {pair.image}: {exc}")
            target = Path(checkpoint) if checkpoint else self.data_path / "audio" / "tower.safetensors"
            trainer = Trainer(tower, kept, text, [captions.index(p.caption) for p in kept], images, waves,
                              options, target, self.stored_model(), log)
            report = trainer.fit()
            if not target.exists():
                raise MMSearchError("training produced no checkpoint")
            self.store.set_meta("audio_tower", {"path": str(target.absolute())})
            self._audio_encoder = None
        return report

    def fit_clap_bridge(self, checkpoint: str, captions_file: str, method: str = "procrustes",
                        output: str | None = None) -> dict:
        """Map LAION-CLAP's space into ours from a caption corpus embedded by both text towers; the
        bridge becomes this data dir's audio tower (CLAP audio → map → our space)."""
        from encoders.bridge import fit_map, load_clap, retrieval_r1, save_bridge
        try:
            with open(captions_file, encoding="utf-8") as handle:
                captions = sorted({line.strip() for line in handle if line.strip()})
        except (OSError, UnicodeDecodeError) as exc:
            raise MMSearchError(f"cannot read captions {captions_file}: {exc}") from None
        if len(captions) < 20:
            raise MMSearchError(f"{captions_file} has {len(captions)} distinct captions; at least 20 are needed")
        with self.write_lock():
            self._adopt_model(False)
            clap = load_clap(checkpoint, str(self.encoder().device))
            source = np.concatenate([np.asarray(clap.get_text_embedding(captions[i:i + 64], use_tensor=False),
                                                np.float32) for i in range(0, len(captions), 64)])
            target = np.concatenate([self.encoder().encode_texts(captions[i:i + 64])
                                     for i in range(0, len(captions), 64)])
            split = max(1, len(captions) // 10)  # held-out captions measure how well the map generalises
            heldout_r1 = retrieval_r1(source[:split] @ fit_map(source[split:], target[split:], method),
                                      target[:split])
            weights = fit_map(source, target, method)
            path = Path(output) if output else self.data_path / "audio" / "clap.bridge.safetensors"
            meta = {"clap_checkpoint": os.path.abspath(checkpoint), "captions": len(captions), "method": method,
                    "heldout_text_r1": heldout_r1, "trained_for": self.stored_model()}
            save_bridge(path, weights, meta)
            self.store.set_meta("audio_tower", {"path": str(path.absolute())})
            self._audio_encoder = None
        return {"bridge": str(path), **meta}

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

    def stats(self) -> dict[str, Any]:
        index = self.index()
        want = self._wanted_index()
        return {**self.store.counts(), "model": self.stored_model(),
                "index": {"type": want.factory, "ntotal": index.ntotal, "dim": want.dim or None,
                          "device": index.device,
                          "by_modality": {space: {"ntotal": part.ntotal, "type": part.state.factory}
                                          for space, part in index.parts.items()}}}

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer per data dir; readers never wait."""
        try:
            handle = open(self.data_path / LOCK_FILE, "a")
        except OSError as exc:
            raise DataDirError(f"data dir {self.data_path} is not writable: {exc.strerror or exc}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"another mmsearch process is writing to {self.data_path}; "
                                  f"wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data dir {path} exists and is not a folder") from None
    except OSError as exc:
        raise DataDirError(f"cannot create data dir {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataDirError(f"data dir {path} is not readable")
