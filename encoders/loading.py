"""Resolve a model name + pretrained tag/file into open_clip weights. Loading only; use lives in clip.py."""
from __future__ import annotations

import os
from pathlib import Path

import open_clip
import torch

from mmsearch.errors import ModelLoadError, first_line

from .clip import ClipEncoder
from .identity import RANDOM, ModelSpec
from .weights import quiet_hub, weights_file

CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)

# Models whose default weights we choose ourselves; the rest take open_clip's first listed tag.
DEFAULT_PRETRAINED = {"ViT-B-32": "laion2b_s34b_b79k", "tiny": RANDOM}
RANDOM_SEED = 0


def resolve_spec(model: str, pretrained: str = "") -> ModelSpec:
    config = open_clip.get_model_config(model)
    if config is None:
        raise ModelLoadError(f"unknown model {model!r}: use 'tiny' or an open_clip config such as ViT-B-32 "
                             f"(python -c 'import open_clip; print(open_clip.list_models())' lists them)")
    pretrained = pretrained or DEFAULT_PRETRAINED.get(model) or _first_tag(model)
    if pretrained != RANDOM and _looks_like_path(pretrained):
        path = Path(os.path.expanduser(pretrained)).absolute()
        if not path.is_file():
            raise ModelLoadError(f"checkpoint file {pretrained} for model {model!r} does not exist")
        pretrained = str(path)
    elif pretrained != RANDOM and not open_clip.get_pretrained_cfg(model, pretrained):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ModelLoadError(f"model {model!r} has no pretrained tag {pretrained!r} (published tags: {tags}; "
                             f"or pass a local checkpoint file, or 'random')")
    return ModelSpec(model, pretrained, int(config["embed_dim"]))


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith("~") or Path(value).suffix in {".pt", ".pth", ".bin", ".safetensors"}


def _first_tag(model: str) -> str:
    tags = open_clip.list_pretrained_tags_by_model(model)
    if not tags:
        raise ModelLoadError(f"model {model!r} has no published weights: pass a local checkpoint file or 'random'")
    return tags[0]


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"invalid device {device!r}: {exc}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return chosen


def _weights_file(spec: ModelSpec, cache_dir: str | None) -> str:
    return spec.pretrained if spec.is_file else weights_file(spec, cache_dir)[0]


def load_open_clip(spec: ModelSpec, device: torch.device, cache_dir: str | None = None
                   ) -> tuple[torch.nn.Module, object, object]:
    """Return (model in eval mode, open_clip's eval preprocess, tokenizer) exactly as open_clip builds them."""
    precision = "fp16" if device.type == "cuda" else "fp32"
    preprocess_cfg = {}
    if spec.pretrained == RANDOM:
        weights = None
    else:
        weights = _weights_file(spec, cache_dir)
        if not spec.is_file:
            # Tags carry their own normalisation/resize; a path alone would fall back to the config's.
            cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
            preprocess_cfg = {f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    try:
        with torch.random.fork_rng(devices=[]), quiet_hub():
            torch.manual_seed(RANDOM_SEED)  # 'random' weights must be the same in every process
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=weights, precision=precision, device=device, **preprocess_cfg)
    except Exception as exc:  # torch.load and state-dict loading raise many types for a bad file
        reason = first_line(exc)
        raise ModelLoadError(f"cannot load weights {spec.pretrained!r} into model {spec.name!r}: {reason}") from None
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(spec.name)


def load_clip_encoder(spec: ModelSpec, device: str = "auto", cache_dir: str | None = None) -> ClipEncoder:
    chosen = pick_device(device)
    model, preprocess, tokenizer = load_open_clip(spec, chosen, cache_dir)
    return ClipEncoder(model, preprocess, tokenizer, chosen, spec.identity())
