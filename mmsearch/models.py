"""Which models a data dir uses, and loading them: the image/text model's identity (chosen by flags, or
the one the data dir was built with), the audio tower's, and adopting a new one (everything it changes
waits to be embedded again). Encoders are loaded on first use; nothing here imports torch at import time."""
from __future__ import annotations

import os
import sys
from typing import Any

from mmsearch.encoders.identity import RANDOM, ModelSpec, describe, encoder_key, file_checksum
from mmsearch.search.store import Store

from .errors import MMSearchError, ModelLoadError, ModelMismatchError
from .settings import Settings


class Models:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self._spec: ModelSpec | None = None
        self._encoder: Any = None
        self._audio_encoder: Any = None

    def stored(self) -> dict | None:
        """The image/text model the data dir's vectors were made with."""
        return self.store.get_meta("model")

    def spec(self, allow_change: bool = False) -> ModelSpec:
        """The model to use: the flags' choice, else the one the data dir was built with."""
        if self._spec is None:
            stored, source = self.stored(), self.store.get_meta("model_source") or {}
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
                from mmsearch.encoders.loading import resolve_spec
                spec = resolve_spec(name, pretrained)
            identity = spec.identity()
            if stored and identity != stored and not allow_change:
                raise ModelMismatchError(
                    f"data dir {self.settings.data_path} was indexed with {describe(stored)}, not "
                    f"{describe(identity)}; run 'index --reembed' to re-embed everything with the new model, "
                    f"or pick the old one")
            self._spec = spec
        return self._spec

    def encoder(self) -> Any:
        if self._encoder is None:
            from mmsearch.encoders.loading import load_clip_encoder
            self._encoder = load_clip_encoder(self.spec(), self.settings.device, self.settings.cache_dir or None)
        return self._encoder

    def clap_wanted(self) -> bool:
        """audio_model: 'own' (the data dir's own tower) or 'clap' (LAION-CLAP through a fitted bridge)."""
        if self.settings.audio_model not in ("own", "clap"):
            raise MMSearchError(f"audio_model is {self.settings.audio_model!r}: use own or clap")
        return self.settings.audio_model == "clap"

    def audio_identity(self) -> dict | None:
        """The audio tower to use, without loading it: a chosen checkpoint, the data dir's trained one, or a
        random tower beside random image/text weights. None: sounds wait for one. (With audio_model clap the
        audio_checkpoint setting names CLAP's weights, and the tower is the bridge adopt made.)"""
        chosen = "" if self.clap_wanted() else self.settings.audio_checkpoint
        path = chosen or (self.store.get_meta("audio_tower") or {}).get("path")
        spec = self.spec()
        if path:
            path = os.path.abspath(os.path.expanduser(path))
            if not os.path.isfile(path):
                raise ModelLoadError(f"audio checkpoint {path} does not exist")
            return {"name": "audio", "checksum": file_checksum(path), "dim": spec.dim, "path": path}
        if spec.pretrained == RANDOM:
            return {"name": "audio", "pretrained": "random-tiny" if spec.name == "tiny" else RANDOM, "dim": spec.dim}
        return None

    def audio_encoder(self) -> Any:
        if self._audio_encoder is None:
            identity = self.audio_identity()
            if identity is None:
                raise MMSearchError("no audio tower: train one with 'train-audio' or pass --audio-checkpoint FILE")
            from mmsearch.encoders.audio_loading import load_audio_encoder
            self._audio_encoder = load_audio_encoder(identity, self.settings.device)
        return self._audio_encoder

    def for_query(self, kind: str) -> Any:
        """The encoder a query part of this kind (text, image, audio) goes through."""
        return self.audio_encoder() if kind == "audio" else self.encoder()

    def use_audio_tower(self, path: str) -> None:
        """Make a trained tower or a CLAP bridge the data dir's audio tower (sounds re-embed on the next index)."""
        self.store.set_meta("audio_tower", {"path": path})
        self._audio_encoder = None

    def adopt(self, reembed: bool = False, reembed_audio: bool = False, audio: bool = True) -> None:
        """Record the models in SQL before an index run (the audio tower too, unless ``audio`` is False); a
        different model (allowed with ``reembed``) or audio tower sends what it embeds back to be embedded.
        A model that cannot load replaces nothing."""
        spec = self.spec(allow_change=reembed)
        identity, stored = spec.identity(), self.stored()
        bridge, clap = self._clap_bridge(identity) if audio and self.clap_wanted() else (None, None)
        source = {"name": spec.name, "pretrained": spec.pretrained}
        if stored != identity:
            self.encoder()
            self.store.replace_encoder(None if stored is None else "all", {"model": identity, "model_source": source})
        elif self.store.get_meta("model_source") != source:  # same weights, file moved
            self.store.set_meta("model_source", source)
        if not audio:
            return
        if bridge is not None and (self.store.get_meta("audio_tower") or {}).get("path") != bridge:
            self.use_audio_tower(bridge)
        tower = self.audio_identity()
        if clap is not None:  # just fitted: embed sounds with the CLAP model already loaded
            from mmsearch.encoders.clap_default import bridged_encoder
            self._audio_encoder = bridged_encoder(tower, clap)
        key = encoder_key(tower) if tower else None
        if key != self.store.get_meta("audio_key") or reembed_audio:
            if tower is not None:
                self.audio_encoder()
            self.store.replace_encoder("audio", {"audio_key": key})

    def _clap_bridge(self, identity: dict) -> tuple[str, Any]:
        """The CLAP bridge for this image/text model: from the data dir's cache, or fitted now on the shipped
        caption corpus (then also the CLAP model). Nothing is written to SQL here, so a CLAP that cannot load
        changes nothing."""
        from mmsearch.encoders.clap_default import default_bridge
        path, clap = default_bridge(self.settings.data_path / "audio", identity, self.settings.audio_checkpoint or None,
                                    self.encoder, log=lambda line: print(line, file=sys.stderr))
        return str(path.absolute()), clap
