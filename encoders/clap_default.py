"""LAION-CLAP as the audio tower out of the box (``index --audio-model clap``): CLAP's default checkpoint
(downloaded by its package on first use) or a local one, bridged into our image/text space by a map fitted
on the caption corpus that ships with mmsearch (encoders/data/sound_captions.txt), once per image/text model.
The fitted bridge is cached in the data dir under a name keyed by our model's encoder key, the CLAP weights,
the corpus and the method, so a later run reuses it and a new image/text model gets its own."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from mmsearch.errors import ModelLoadError

from .bridge import (DEFAULT_CHECKPOINT, ClapAudioEncoder, fit_bridge, is_bridge, load_bridge, load_clap,
                     read_captions, save_bridge)
from .clap_captions import CORPUS
from .identity import encoder_key

METHOD = "procrustes"  # keeps angles, so CLAP's own audio–text geometry survives the map

Log = Callable[[str], None]


def clap_source(checkpoint: str | None) -> dict:
    """What names the CLAP weights: the package's default checkpoint, or a local file by its path, size and
    modification time (a checksum of a 2 GB file on every index run would cost seconds)."""
    if checkpoint is None:
        return {"default": DEFAULT_CHECKPOINT}
    path = os.path.abspath(os.path.expanduser(checkpoint))
    try:
        stat = os.stat(path)
    except OSError:
        raise ModelLoadError(f"CLAP checkpoint {checkpoint} does not exist") from None
    return {"file": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def bridge_path(folder: Path, model_identity: dict, source: dict, corpus: Path | None = None) -> Path:
    """The cache file of the bridge for this image/text model, CLAP weights and corpus (default: the shipped one)."""
    digest = hashlib.sha256(Path(corpus or CORPUS).read_bytes()).hexdigest()[:16]
    key = json.dumps({"model": encoder_key(model_identity), "clap": source, "corpus": digest, "method": METHOD},
                     sort_keys=True)
    return Path(folder) / f"clap-{hashlib.sha256(key.encode()).hexdigest()[:16]}.bridge.safetensors"


def default_bridge(folder: Path, model_identity: dict, checkpoint: str | None, encoder: Callable[[], Any],
                   log: Log = lambda _: None, corpus: Path | None = None) -> tuple[Path, Any]:
    """The bridge file for ``model_identity`` (``encoder()`` gives its text tower), and the CLAP model when it
    was fitted now (None: reused from the cache, nothing loaded)."""
    source = clap_source(checkpoint)
    path = bridge_path(folder, model_identity, source, corpus)
    if path.is_file() and is_bridge(str(path)):
        return path, None
    clap = load_clap(source.get("file"), str(encoder().device))
    corpus = Path(corpus or CORPUS)
    captions = read_captions(corpus)
    log(f"fitting the LAION-CLAP bridge into {encoder_key(model_identity)} on {len(captions)} captions "
        f"(once for this model; cached as {path})")
    weights, heldout_r1 = fit_bridge(clap, encoder().encode_texts, captions, METHOD)
    meta = {"clap_checkpoint": source.get("file"), "clap": source, "captions": len(captions),
            "corpus": corpus.name, "method": METHOD, "heldout_text_r1": heldout_r1, "trained_for": model_identity}
    save_bridge(path, weights, meta)
    log(f"CLAP bridge fitted: held-out caption R@1 {heldout_r1:.3f}")
    return path, clap


def bridged_encoder(identity: dict, clap: Any) -> ClapAudioEncoder:
    """The audio encoder of a bridge file (``identity['path']``) around a CLAP model already loaded."""
    weights, _ = load_bridge(Path(identity["path"]))
    return ClapAudioEncoder(clap, weights, {k: v for k, v in identity.items() if k != "path"})
