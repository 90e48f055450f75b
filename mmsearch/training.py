"""Fitting the audio tower against a data dir's frozen image/text model: train-audio on (audio, caption[,
image]) pairs, or a linear bridge from LAION-CLAP's space. The result becomes the data dir's tower."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import MMSearchError
from .models import Models

Log = Callable[[str], None]


def _texts(encoder: Any, captions: list[str]) -> np.ndarray:
    return np.concatenate([encoder.encode_texts(captions[i:i + 64]) for i in range(0, len(captions), 64)])


def train_audio(models: Models, folder: Path, manifest: str, options: Any, checkpoint: str | None = None,
                log: Log = lambda _: None) -> Any:
    """Train (or teach more sounds to) the audio tower; the caller holds the write lock."""
    from mmsearch.encoders.audio import build_tower, default_config, load_tower
    from mmsearch.encoders.audio_training import Trainer, read_manifest
    from mmsearch.indexer.decode import DecodeError, decode_audio, decode_image, model_input_side
    pairs = read_manifest(manifest)
    models.adopt(audio=False)
    spec, encoder = models.spec(), models.encoder()
    current = models.audio_identity()
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
    images: dict[int, np.ndarray] = {}
    for i, pair in enumerate(kept):
        if pair.image:
            try:
                with open(pair.image, "rb") as handle:
                    limits = models.settings
                    picture = decode_image(handle.read(), limits.max_image_pixels, limits.max_image_bytes,
                                           model_input_side(encoder), limits.max_image_aspect).image
                images[i] = encoder.encode_images([picture])[0]
            except (OSError, DecodeError) as exc:
                log(f"image ignored {pair.image}: {exc}")
    target = Path(checkpoint) if checkpoint else folder / "audio" / "tower.safetensors"
    trainer = Trainer(tower, kept, _texts(encoder, captions), [captions.index(p.caption) for p in kept], images,
                      waves, options, target, models.stored(), log)
    report = trainer.fit()
    if not target.exists():
        raise MMSearchError("training produced no checkpoint")
    models.use_audio_tower(str(target.absolute()))
    return report


def fit_clap_bridge(models: Models, folder: Path, checkpoint: str, captions_file: str,
                    method: str = "procrustes", output: str | None = None) -> dict:
    """Map LAION-CLAP's space into ours from a caption corpus embedded by both text towers; the bridge
    becomes the data dir's audio tower (CLAP audio → map → our space). The caller holds the write lock."""
    from mmsearch.encoders.bridge import fit_bridge, load_clap, read_captions, save_bridge
    captions = read_captions(captions_file)
    if len(captions) < 20:
        raise MMSearchError(f"{captions_file} has {len(captions)} distinct captions; at least 20 are needed")
    models.adopt(audio=False)
    clap = load_clap(checkpoint, str(models.encoder().device))
    weights, heldout_r1 = fit_bridge(clap, models.encoder().encode_texts, captions, method)
    path = Path(output) if output else folder / "audio" / "clap.bridge.safetensors"
    meta = {"clap_checkpoint": os.path.abspath(checkpoint), "captions": len(captions), "method": method,
            "heldout_text_r1": heldout_r1, "trained_for": models.stored()}
    save_bridge(path, weights, meta)
    models.use_audio_tower(str(path.absolute()))
    return {"bridge": str(path), **meta}
