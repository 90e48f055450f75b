"""``index --engine ray``: the planned files decoded in Ray Data CPU tasks and embedded in a pool of model
actors, the results streamed back to this process, which resolves moves and copies and commits each batch
exactly as the local engine does (indexer/pipeline.py): same plan, same transactions, same resumption.

Ray is imported only here, and only when this engine is chosen. A run joins the cluster that the
RAY_ADDRESS environment variable names (ray.init reads it), else starts a Ray on this machine; a Ray
already started in this process (a program or a test that called ray.init) is used as it is.

The actors load the towers themselves from the model's identity (Towers: the same loaders as
mmsearch.models.Models), rather than receiving weights: the identity is a few bytes, every node then reads
the weights as this machine does (open_clip's cache, or a checkpoint file at the same path), and an actor
whose weights differ from this process's is refused instead of storing other vectors.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import pickle
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from mmsearch.encoders.identity import ModelSpec, encoder_key
from mmsearch.errors import MMSearchError, ModelLoadError, first_line

from .pipeline import Indexer
from .plan import Task
from .prepare import Prepared, Preparer, embed, embed_captions

NEEDS_RAY = "index --engine ray needs ray: pip install 'mmsearch[ray]'"


def require_ray() -> Any:
    """The ray module, with Ray Data; a missing one is one line."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks pyarrow/pandas)
    except ImportError:
        raise MMSearchError(NEEDS_RAY) from None
    return ray


@dataclass(frozen=True)
class Towers:
    """What a model actor needs to load the data dir's towers in its own process: the image/text model's
    spec and the audio tower's identity (None: sounds wait for one), as mmsearch.models.Models holds them."""

    spec: ModelSpec
    device: str
    cache_dir: str | None = None
    audio: dict | None = None

    def encoder(self) -> Any:
        from mmsearch.encoders.loading import load_clip_encoder
        loaded = load_clip_encoder(self.spec, self.device, self.cache_dir)
        if encoder_key(loaded.identity) != encoder_key(self.spec.identity()):
            raise ModelLoadError(f"a model actor loaded {encoder_key(loaded.identity)}, not "
                                 f"{encoder_key(self.spec.identity())}: put the same weights on every node")
        return loaded

    def audio_encoder(self) -> Any:
        from mmsearch.encoders.audio_loading import load_audio_encoder
        return load_audio_encoder(self.audio, self.device)


def _digest(content_hash: str) -> int:
    return int.from_bytes(hashlib.blake2b(content_hash.encode(), digest_size=8).digest(), "little")


class KnownHashes:
    """The stored content hashes, 8 bytes each in one sorted array (read without a copy from Ray's object
    store by every decode task), for Preparer's "is this new path a move or a copy?". A false match only
    sends a file back undecoded: the committing process finds no source and has it decoded then."""

    def __init__(self, hashes: Iterable[str]):
        self.digests = np.unique(np.fromiter((_digest(h) for h in hashes), np.uint64))

    def __contains__(self, content_hash: object) -> bool:
        if not isinstance(content_hash, str) or not len(self.digests):
            return False
        digest = np.uint64(_digest(content_hash))
        at = int(np.searchsorted(self.digests, digest))
        return at < len(self.digests) and self.digests[at] == digest


def _column(values: list[bytes]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def decode_batch(batch: dict[str, np.ndarray], prepare: Preparer) -> dict[str, np.ndarray]:
    """A Ray task: a batch of pickled tasks read, hashed, decoded and preprocessed (Prepared, pickled)."""
    return {"prepared": _column([pickle.dumps(prepare(pickle.loads(blob)))
                                 for blob in batch["task"]])}


class ModelActor:
    """A Ray actor holding the towers (each loaded on first need), embedding batches of Prepared."""

    def __init__(self, towers: Towers):
        self.towers = towers
        self._encoder: Any = None
        self._audio_encoder: Any = None

    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = self.towers.encoder()
        return self._encoder

    def audio_encoder(self) -> Any:
        if self._audio_encoder is None:
            self._audio_encoder = self.towers.audio_encoder()
        return self._audio_encoder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared: list[Prepared] = [pickle.loads(blob) for blob in batch["prepared"]]
        embed(prepared, self.encoder, self.audio_encoder)
        # Captions before moves are known: the committing process drops those a move makes unneeded
        embed_captions(prepared, self.encoder)
        for p in prepared:
            p.pixels = None  # committing needs the vectors, not the model's input
        return {"prepared": _column([pickle.dumps(p) for p in prepared])}


def _not_restarted() -> dict:
    """Model actors are not restarted: a lost one fails the run, which the next run resumes from what was
    committed (restartable actors also make Ray's core log a warning on every run)."""
    return {"max_restarts": 0}


class RayEngine:
    """``num_gpus``: GPUs each model actor reserves (0: the towers run on CPU); ``actors``: how many model
    actors (0: as many as the cluster's GPUs allow at num_gpus each, else 1); ``batch_size``: files per
    decode task, per model batch and per commit."""

    def __init__(self, towers: Towers, num_gpus: float = 0.0, actors: int = 0, batch_size: int = 32):
        self.ray = require_ray()
        if not num_gpus and towers.device == "auto":  # an actor that reserved no GPU must not take one
            towers = dataclasses.replace(towers, device="cpu")
        self.towers, self.num_gpus, self.actors, self.batch_size = towers, num_gpus, actors, batch_size

    def batches(self, indexer: Indexer, tasks: list[Task]) -> Iterator[list[Prepared]]:
        self._connect()
        yield from self._run(indexer.preparer(KnownHashes(indexer.by_hash)), tasks)

    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the index command draws its own
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)

    def _pool_size(self) -> int:
        if self.actors:
            return self.actors
        if not self.num_gpus:
            return 1
        gpus = self.ray.cluster_resources().get("GPU", 0)
        if gpus < self.num_gpus:
            raise MMSearchError(f"--num-gpus {self.num_gpus:g} per model actor, but the Ray cluster has "
                                f"{gpus:g} GPUs")
        return int(gpus // self.num_gpus)

    def _run(self, prepare: Preparer, tasks: list[Task]) -> Iterator[list[Prepared]]:
        ray, size = self.ray, self.batch_size
        items = [{"task": pickle.dumps(task)} for task in tasks]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / size)))
        # Decode tasks reserve the memory one decode may take (IndexerOptions.max_image_bytes): Ray places them
        # by it, and, their resources differing from the actors', keeps them separate tasks (Ray Data fuses
        # stages of equal resources into the actors, which would decode and embed in turn)
        dataset = dataset.map_batches(decode_batch, batch_size=size, fn_kwargs={"prepare": prepare},
                                      num_cpus=1, memory=prepare.options.max_image_bytes)
        with warnings.catch_warnings():  # ray_remote_args_fn: deprecated, the only way to max_restarts until 2.64
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(ModelActor, batch_size=size, fn_constructor_kwargs={"towers": self.towers},
                                          compute=ray.data.ActorPoolStrategy(size=self._pool_size()),
                                          num_cpus=1, num_gpus=self.num_gpus, ray_remote_args_fn=_not_restarted)
        try:
            for rows in dataset.iter_batches(batch_size=size, batch_format="numpy"):
                yield [pickle.loads(blob) for blob in rows["prepared"]]
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MMSearchError):  # a model actor that could not load its towers
                raise cause from None
            raise MMSearchError(f"ray: {first_line(cause or exc)}") from None
