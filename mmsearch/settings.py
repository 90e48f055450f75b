"""Every setting in one table, merged from defaults, a TOML file, the environment and flags.

Precedence, lowest first: default < config file (``MMSEARCH_CONFIG`` / ``--config``) <
``MMSEARCH_<NAME>`` environment variable < command-line flag.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import MMSearchError
from .modalities import MODALITIES

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
    unknown = set(weights) - set(MODALITIES)
    if unknown or any(not w > 0 for w in weights.values()):
        raise ValueError(f"{value!r}: weights are positive numbers for image, audio and text")
    return {m: weights.get(m, 1.0) for m in MODALITIES}


def _non_negative_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _vector_store(value: Any) -> str:
    """faiss, milvus:PATH.db or milvus:http(s)://HOST:PORT; milvus://HOST:PORT (issue #16's spelling) is the
    server at http://HOST:PORT, normalised here so that every other module sees one spelling."""
    text = str(value).strip()
    server = re.fullmatch(r"milvus://([^/\s]\S*)", text)
    if server:
        text = f"milvus:http://{server.group(1)}"
    if text == "faiss" or re.fullmatch(r"milvus:(https?://\S+|\S+\.db)", text):
        return text
    raise ValueError(f"{value!r} is not faiss, milvus:PATH.db or milvus:http://HOST:PORT")


def _codes(value: Any) -> str:
    from mmsearch.search.index_types import CODES
    if str(value) not in CODES:
        raise ValueError(f"{value!r} is not one of {', '.join(CODES)}")
    return str(value)


def _templates(value: Any) -> dict[str, list[str]]:
    """The zero-shot prompt templates, the built-in ones for any modality the value leaves out."""
    import json
    from mmsearch.encoders.zero_shot import DEFAULT_TEMPLATES, check_templates
    if isinstance(value, str) and value.strip():  # text (the environment's): a JSON object or a TOML table
        text = value.strip()
        try:
            value = json.loads(text)
        except ValueError:
            try:  # a TOML document (image = ["a photo of {}."]) or an inline table ({image = [...]})
                value = tomllib.loads(f"table = {text}")["table"] if text.startswith("{") else tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"neither a JSON object nor a TOML table ({exc}), e.g. "
                                 "image = [\"a photo of {}.\"] or {\"image\": [\"a photo of {}.\"]}") from None
    elif isinstance(value, str):
        value = {}
    if not isinstance(value, dict) or set(value) - set(MODALITIES) or not all(isinstance(v, list) for v in
                                                                              value.values()):
        raise ValueError("want a table of image, audio and/or text to lists of templates")
    chosen = {m: list(value.get(m, DEFAULT_TEMPLATES[m])) for m in MODALITIES}
    for templates in chosen.values():
        check_templates(templates)
    return chosen


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str
    flag: bool = False  # also a global command-line option, --name-with-dashes
    secret: bool = False  # never printed by 'mmsearch settings'

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "~/.local/share/mmsearch",
            "Folder holding the SQLite database, the vector index cache and the write lock.", flag=True),
    Setting("db_url", "",
            "SQLAlchemy URL of the metadata database (vectors included). Empty: SQLite file mmsearch.db in the data dir.", flag=True),
    Setting("model", "ViT-B-32",
            "open_clip model config for images and text, or 'tiny' (built-in small preset, no download).", flag=True),
    Setting("pretrained", "",
            "open_clip pretrained tag, a local checkpoint file, or 'random' (deterministic init). "
            "Empty: laion2b_s34b_b79k for ViT-B-32, the first published tag for other models, random for tiny.", flag=True),
    Setting("audio_checkpoint", "",
            "Audio tower checkpoint (.safetensors) to use instead of the data dir's own (set by train-audio). "
            "Empty: the data dir's trained tower; with 'random' image/text weights, a random tower of the same size.", flag=True),
    Setting("audio_model", "own",
            "Audio tower that index uses: own (the data dir's own, as audio_checkpoint says) or clap (LAION-CLAP "
            "bridged into the image/text space on the shipped caption corpus, fitted once per image/text model and "
            "cached in the data dir; needs pip install 'mmsearch[clap]'). With clap, audio_checkpoint names a local "
            "LAION-CLAP checkpoint; empty: the package downloads its default one on first use."),
    Setting("max_audio_seconds", 600.0, "Seconds of each sound decoded and embedded; the rest is ignored.",
            _positive_float),
    Setting("device", "auto", "torch device for the encoders: auto (CUDA when present), cpu, cuda, cuda:N.", flag=True),
    Setting("batch_size", 32, "Items per model batch when indexing.", _positive_int),
    Setting("workers", 0, "Decoding threads when indexing; 0 means one per CPU core.", _non_negative_int),
    Setting("max_image_pixels", 100_000_000,
            "Images with more pixels are refused as decompression bombs.", _positive_int),
    Setting("max_image_bytes", 192 * 2**20,
            "Memory budget in bytes of decoding one image (per query and per indexing worker), reckoned from "
            "the header with mode and bit depth counted; an image that would need more is refused unread.",
            _positive_int),
    Setting("max_image_aspect", 50.0, "Images whose long side is more than this many times the short side are refused.",
            _positive_float),
    Setting("max_text_chars", 100_000, "Characters of a text document kept in the database.", _positive_int),
    Setting("modality_weights", "image=1,audio=1,text=1",
            "Weights of an item's vectors in its one item vector, which --like, --dedupe and explain's "
            "item_vector use: normalise(w[own modality]·content + w[text]·caption). Ranking compares the query "
            "with each vector on its own, so changing them changes no index.",
            _weights),
    Setting("index_type", "auto",
            "The vector index of each modality: auto (exact below ann_threshold vectors; above, IVF with about "
            "√n lists, trained on a sample of the collection and rebuilt each time it doubles, in the background "
            "in a server) or a FAISS factory string (inner product), e.g. Flat, SQ8, HNSW32 or IVF1024,Flat."),
    Setting("index_codes", "Flat",
            "How index_type auto stores each vector in the index: Flat (float32), SQfp16 or SQ8 (float16 or 8-bit "
            "codes: half or a quarter of the memory; SQL keeps float32).", _codes),
    Setting("ann_threshold", 50_000,
            "index_type auto: a modality with at least this many vectors gets an approximate (IVF) index; "
            "fewer are searched exactly.", _positive_int),
    Setting("index_mmap", True,
            "Open the vector index files memory-mapped (flat, scalar-quantised and IVF codes): read on demand and "
            "shared by every process on the machine through the page cache; the first change copies a part "
            "into memory.", _boolean),
    Setting("nprobe", 16, "IVF index types: inverted lists visited per query (higher: better recall, slower).",
            _positive_int),
    Setting("vector_store", "faiss",
            "Where the vector index lives: faiss (index files in the data dir), milvus:PATH.db (milvus-lite run "
            "embedded, in that file; a relative path is inside the data dir) or milvus:http://HOST:19530 (a Milvus "
            "server). Milvus keeps one collection a modality with an exact FLAT index, caught up from SQL as the "
            "files are; it needs pip install 'mmsearch[milvus]'.", _vector_store),
    Setting("cache_dir", "", "Where downloaded weights are kept. Empty: the Hugging Face / open_clip default cache."),
    Setting("admin_token", "",
            "Bearer token that enables POST /api/items (upload) and DELETE /api/items/ID in the web API. "
            "Empty: both are off.", secret=True),
    Setting("query_max_parts", 32, "Most parts one search may have, however written (query syntax, JSON parts, "
            "files, --like).", _positive_int),
    Setting("query_max_chars", 4000, "Longest query text, in characters.", _positive_int),
    Setting("query_max_weight", 1000.0, "Largest weight a query part may have, in either sign.", _positive_float),
    Setting("explain_max_rows", 4000, "With explain, k × query parts may be at most this: each result explains "
            "each part.", _positive_int),
    Setting("query_cache_size", 1024, "Text queries whose vectors each process keeps (an LRU keyed by model and "
            "exact text), so a repeated query skips the text encoder; 0 keeps none.", _non_negative_int),
    Setting("json_max_depth", 32, "Deepest nesting of arrays and objects a JSON request body may have.",
            _positive_int),
    Setting("max_upload_bytes", 50 * 1024 * 1024,
            "Largest request body the web API accepts (uploads and query files); larger ones get 413.",
            _positive_int),
    Setting("thumbnail_size", 256, "Longest side in pixels of the image thumbnails the web API makes and caches.",
            _positive_int),
    Setting("connection_limit", 1000,
            "Open connections serve accepts at once; beyond it new ones wait in the listen backlog.", _positive_int),
    Setting("channel_timeout", 30,
            "Seconds serve keeps a connection with nothing in progress (idle keep-alive, a request never finished).",
            _positive_int),
    Setting("max_request_line", 32768,
            "Longest request target (path and query string) in bytes; longer ones get a JSON 414.", _positive_int),
    Setting("max_header_bytes", 65536,
            "Longest request line plus headers in bytes that serve reads; more gets a JSON 431.", _positive_int),
    Setting("max_form_fields", 1000,
            "Most fields (files included) in a form body; more get a JSON 413 naming this limit.", _positive_int),
    Setting("tag_templates", "",
            "Zero-shot prompt templates per modality, each with one {} for the label, averaged per label: a TOML "
            "table or JSON object such as {\"image\": [\"a photo of {}.\"], \"audio\": [\"the sound of {}.\"]}. "
            "Modalities left out keep the built-in ensembles.", _templates),
    Setting("tag_on_index", True, "After an index run, tag the items it added or changed with every stored tag "
            "set, the way each set was made (classify's labels, train-classifier's model).", _boolean),
)
_BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """Resolved settings; ``source(name)`` says where each value came from."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str], config_file: str | None = None):
        self._values = dict(values)
        self._sources = dict(sources)
        self.config_file = config_file

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
        return Settings(merged, sources, self.config_file)

    def describe(self) -> list[dict[str, Any]]:
        """Every setting with its value and where that came from (secrets and passwords masked), as
        'mmsearch settings' shows them."""
        where = {"flag": lambda s: f"--{s.name.replace('_', '-')}", "env": lambda s: s.env,
                 "config": lambda s: str(self.config_file), "default": lambda s: "", "argument": lambda s: ""}
        out = []
        for setting in SETTINGS:
            value, source = self._values[setting.name], self._sources[setting.name]
            if setting.secret and value:
                value = "***"
            elif isinstance(value, str):
                value = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)  # a password in a database URL
            out.append({"name": setting.name, "value": value, "source": source, "from": where[source](setting),
                        "default": setting.default if not setting.secret else "", "help": setting.help})
        return out

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
    return Settings(values, sources, str(config_file) if config_file else None)
