"""Every setting in one table, merged from defaults, a TOML file, the environment and flags.

Precedence, lowest first: default < config file (``MMSEARCH_CONFIG`` / ``--config``) <
``MMSEARCH_<NAME>`` environment variable < command-line flag.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import MMSearchError

ENV_PREFIX = "MMSEARCH_"


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value!r} is not a positive integer")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{value!r} is not a positive number")
    return number


def _weights(value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        pairs = value.items()
    else:
        pairs = [item.split("=", 1) for item in str(value).split(",") if item.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"{value!r} is not of the form image=1,audio=1,text=0.5")
    weights = {str(k).strip(): float(v) for k, v in pairs}
    unknown = set(weights) - {"image", "audio", "text"}
    if unknown or any(not w > 0 for w in weights.values()):
        raise ValueError(f"{value!r}: weights are positive numbers for image, audio and text")
    return {m: weights.get(m, 1.0) for m in ("image", "audio", "text")}


def _non_negative_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "~/.local/share/mmsearch",
            "Folder holding the SQLite database, the vector index cache and the write lock."),
    Setting("db_url", "",
            "SQLAlchemy URL of the metadata database (vectors included). Empty: SQLite file mmsearch.db in the data dir."),
    Setting("model", "ViT-B-32",
            "open_clip model config for images and text, or 'tiny' (built-in small preset, no download)."),
    Setting("pretrained", "",
            "open_clip pretrained tag, a local checkpoint file, or 'random' (deterministic init). "
            "Empty: laion2b_s34b_b79k for ViT-B-32, the first published tag for other models, random for tiny."),
    Setting("audio_checkpoint", "",
            "Audio tower checkpoint (.safetensors) to use instead of the data dir's own (set by train-audio). "
            "Empty: the data dir's trained tower; with 'random' image/text weights, a random tower of the same size."),
    Setting("max_audio_seconds", 600.0, "Seconds of each sound decoded and embedded; the rest is ignored.",
            _positive_float),
    Setting("device", "auto", "torch device for the encoders: auto (CUDA when present), cpu, cuda, cuda:N."),
    Setting("batch_size", 32, "Items per model batch when indexing.", _positive_int),
    Setting("workers", 0, "Decoding threads when indexing; 0 means one per CPU core.", _non_negative_int),
    Setting("max_image_pixels", 100_000_000,
            "Images with more pixels are refused as decompression bombs.", _positive_int),
    Setting("max_text_chars", 100_000, "Characters of a text document kept in the database.", _positive_int),
    Setting("modality_weights", "image=1,audio=1,text=1",
            "Weights of an item's vectors in its fused vector: an image or sound with a caption is indexed as "
            "normalise(w[own modality]·content + w[text]·caption). Changing them only rebuilds the index.",
            _weights),
    Setting("index_type", "Flat",
            "FAISS index factory string for the vector index (inner product), e.g. Flat or IVF1024,Flat."),
    Setting("nprobe", 16, "IVF index types: inverted lists visited per query (higher: better recall, slower).",
            _positive_int),
    Setting("cache_dir", "", "Where downloaded weights are kept. Empty: the Hugging Face / open_clip default cache."),
    Setting("admin_token", "",
            "Bearer token that enables POST /api/items (upload) and DELETE /api/items/ID in the web API. "
            "Empty: both are off."),
    Setting("max_upload_bytes", 50 * 1024 * 1024,
            "Largest request body the web API accepts (uploads and query files); larger ones get 413.",
            _positive_int),
    Setting("thumbnail_size", 256, "Longest side in pixels of the image thumbnails the web API makes and caches.",
            _positive_int),
)
_BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """Resolved settings; ``source(name)`` says where each value came from."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str]):
        self._values = dict(values)
        self._sources = dict(sources)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name: str) -> str:
        return self._sources[name]

    def explicit(self, name: str) -> bool:
        return self._sources[name] != "default"

    def replace(self, **values: Any) -> "Settings":
        merged = dict(self._values)
        sources = dict(self._sources)
        for name, value in values.items():
            merged[name] = _parse(_BY_NAME[name], value, "argument")
            sources[name] = "argument"
        return Settings(merged, sources)

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(str(self.data_dir))).absolute()

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_path / 'mmsearch.db'}"

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def _parse(setting: Setting, value: Any, origin: str) -> Any:
    try:
        return setting.parse(value)
    except (TypeError, ValueError) as exc:
        raise MMSearchError(f"invalid {setting.name} from {origin}: {exc}") from None


def load_settings(flags: Mapping[str, Any] | None = None,
                  env: Mapping[str, str] | None = None,
                  config_file: str | os.PathLike | None = None) -> Settings:
    """Merge the table's defaults with a TOML file, the environment and flags (``None`` flags are unset)."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = set(flags) - set(_BY_NAME)
    if unknown:
        raise MMSearchError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    file_values: dict[str, Any] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        try:
            with open(os.path.expanduser(str(config_file)), "rb") as handle:
                file_values = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise MMSearchError(f"cannot read config file {config_file}: {exc}") from None
        unknown = set(file_values) - set(_BY_NAME)
        if unknown:
            raise MMSearchError(f"config file {config_file}: unknown setting(s) {', '.join(sorted(unknown))}")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        for origin, layer, key in (("flag", flags, setting.name), ("env", env, setting.env),
                                   ("config", file_values, setting.name)):
            if key in layer:
                values[setting.name] = _parse(setting, layer[key], f"{origin} {key}")
                sources[setting.name] = origin
                break
        else:
            values[setting.name] = setting.parse(setting.default)
            sources[setting.name] = "default"
    return Settings(values, sources)
