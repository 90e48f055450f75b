"""What every engine does to one batch of an index run, wherever it runs: read, hash and decode a file
(Preparer, a picklable object that needs no database, so Ray tasks can run it too), and run the towers over a
batch (embed, embed_captions). Planning and committing stay in indexer/pipeline.py, in the process that
holds the data dir."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Container

import numpy as np

from mmsearch.search.tables import PASSAGE, PENDING, SEGMENT
from mmsearch.search.writes import Part

from .decode import Decoded, DecodeError, content_hash, decode, decode_audio, file_hash, probe_audio
from .plan import Task, read_caption


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


@dataclass
class Prepared:
    task: Task
    hash: str | None = None
    decoded: Decoded | None = None
    pixels: Any = None
    caption: str | None = None
    error: str | None = None
    same_content: bool = False  # only the mtime changed
    vector: np.ndarray | None = None  # set by embed: the content vector
    parts: list[Part] = field(default_factory=list)  # and its passages or segments
    caption_vector: np.ndarray | None = None  # set by embed_captions

    @property
    def embedded(self) -> bool:
        return self.vector is not None


@dataclass
class Preparer:
    """Reads, hashes and decodes one task's file. ``preprocess`` and ``model_side`` are the image tower's
    (None/0 when no image or text needs embedding), ``sample_rate`` the audio tower's (None: sounds are only
    probed, and wait for a tower); ``known`` holds the stored content hashes a new path may be a move or a
    copy of (its file is then not decoded unless forced: the committing process decides)."""

    options: IndexerOptions
    preprocess: Callable | None
    model_side: int
    sample_rate: int | None
    known: Container[str]

    def __call__(self, task: Task, force_decode: bool = False) -> Prepared:
        entry, options = task.entry, self.options
        out = Prepared(task)
        if task.caption_only:
            out.hash, out.same_content = task.row.content_hash, True
            out.caption = read_caption(entry.caption_path, options.max_text_chars)
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
        out.caption = read_caption(entry.caption_path, options.max_text_chars)
        if task.row is not None and task.row.content_hash == out.hash and task.row.status != PENDING \
                and not task.upgrade:
            out.same_content = True
            return out
        if task.row is None and out.hash in self.known and not force_decode:
            return out  # a move or a copy: the committing process decides, usually without decoding
        try:
            if streamed and self.sample_rate is not None:
                out.decoded = decode_audio(entry.path, self.sample_rate, options.max_audio_seconds)
            elif streamed:
                out.decoded = probe_audio(entry.path)
            else:
                out.decoded = decode(entry.modality, data, entry.path, options.max_image_pixels,
                                     options.max_text_chars, max_image_bytes=options.max_image_bytes,
                                     max_image_aspect=options.max_image_aspect, model_side=self.model_side)
            if out.decoded.image is not None and self.preprocess is not None:
                out.pixels = self.preprocess(out.decoded.image)
                out.decoded.image = None  # keep only the tensor in flight
        except DecodeError as exc:
            out.error = str(exc)
        except Exception as exc:  # a decoder bug on one file must not stop the run
            out.error = f"unexpected decoder error: {type(exc).__name__}: {str(exc)[:160]}"
        return out

    def sound_bytes(self, task: Task) -> int:
        """An upper estimate of a task's decoded sound (16 kHz mono float32, capped), before decoding it:
        compressed audio decodes to at most ~16× its file size (32 kbit/s Opus)."""
        if task.entry.modality != "audio" or task.caption_only:
            return 0
        capped = int(self.options.max_audio_seconds * 16_000 * 4)
        return min(capped, 16 * task.entry.size)


def embed(batch: list[Prepared], encoder: Callable[[], Any], audio_encoder: Callable[[], Any]) -> None:
    """Runs the towers once per modality over what is decoded and not embedded yet: each item's vector and
    its parts (a long note's passages, a long sound's segments). The towers are asked for only when needed."""
    todo = [p for p in batch if not p.error and not p.embedded]
    images = [p for p in todo if p.pixels is not None]
    texts = [p for p in todo if p.decoded is not None and p.decoded.text is not None
             and p.task.entry.modality == "text"]
    sounds = [p for p in todo if p.decoded is not None and p.decoded.wave is not None]
    if images:
        import torch  # only here: planning and no-op runs never import torch
        for p, vector in zip(images, encoder().encode_pixels(torch.stack([p.pixels for p in images]))):
            p.vector = vector
    if texts:
        tower = encoder()
        passages = _passages(tower, [p.decoded.text for p in texts])
        for p, vector, parts in zip(texts, tower.encode_texts([p.decoded.text for p in texts]), passages):
            p.vector, p.parts = vector, parts
    if sounds:
        for p, sound in zip(sounds, audio_encoder().embed_waves([p.decoded.wave for p in sounds])):
            p.vector = sound.vector
            p.parts = [Part(SEGMENT, start, end, v) for (start, end), v in zip(sound.spans, sound.segments)]
            p.decoded.wave = None


def wants_caption(prepared: Prepared) -> bool:
    """A caption sidecar goes through the text tower, unless the item kept both file and caption."""
    p = prepared
    return bool(p.caption) and not p.error and \
        not (p.same_content and p.task.row is not None and p.caption == p.task.row.caption)


def embed_captions(batch: list[Prepared], encoder: Callable[[], Any]) -> None:
    todo = [p for p in batch if wants_caption(p) and p.caption_vector is None]
    if todo:
        for p, vector in zip(todo, encoder().encode_texts([p.caption for p in todo])):
            p.caption_vector = vector


def _passages(encoder: Any, texts: list[str], chunk: int = 256) -> list[list[Part]]:
    """Each text's passages (none when the text tower reads all of it), embedded in bounded batches."""
    spans = [encoder.passages(text) for text in texts]
    pieces = [(row, start, end) for row, found in enumerate(spans) for start, end in found]
    out: list[list[Part]] = [[] for _ in texts]
    for first in range(0, len(pieces), chunk):
        window = pieces[first:first + chunk]
        vectors = encoder.encode_texts([texts[row][start:end] for row, start, end in window])
        for (row, start, end), vector in zip(window, vectors):
            out[row].append(Part(PASSAGE, start, end, vector))
    return out
