"""Choosing and loading the audio tower named by an identity: a CLAP bridge file, a trained checkpoint,
or the deterministic random tower that goes with random image/text weights. One loader for all three."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmsearch.errors import ModelLoadError


def load_audio_encoder(identity: dict[str, Any], device: str) -> Any:
    """An encoder with ``encode_waves`` and ``config.sample_rate`` for ``identity`` (see
    mmsearch.models.Models.audio_identity), its vectors in the image/text model's ``identity['dim']``."""
    from .audio import AudioEncoder, build_tower, default_config, load_tower
    from .bridge import ClapAudioEncoder, is_bridge, load_bridge, load_clap
    from .loading import pick_device
    key = {k: v for k, v in identity.items() if k != "path"}
    path = identity.get("path")
    if path and is_bridge(path):
        weights, meta = load_bridge(Path(path))
        if weights.shape[1] != identity["dim"]:
            raise ModelLoadError(f"CLAP bridge {path} maps to {weights.shape[1]}-d; "
                                 f"the image/text model makes {identity['dim']}-d")
        clap = load_clap(meta["clap_checkpoint"], str(pick_device(device)))
        return ClapAudioEncoder(clap, weights, key)
    if path:
        tower, _ = load_tower(Path(path))
        if tower.config.embed_dim != identity["dim"]:
            raise ModelLoadError(f"audio checkpoint {path} makes {tower.config.embed_dim}-d "
                                 f"vectors; the image/text model makes {identity['dim']}-d")
    else:
        tower = build_tower(default_config(identity["dim"], small=identity["pretrained"] == "random-tiny"))
    return AudioEncoder(tower, pick_device(device), key)
