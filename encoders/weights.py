"""Where a published open_clip checkpoint lives on this machine: the hub cache, or a download.

The hub client retries an unreachable hub with back-off (1+2+4+8+8 s, for each of the two file names
open_clip tries), so a machine without the network waited ~50 s for a failure. Here a cached file is
used without any network call, HF_HUB_OFFLINE means the cache alone, and otherwise one short request
to the hub endpoint decides, before the download, whether it can be reached at all.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import huggingface_hub
from huggingface_hub import constants as hub

import open_clip

from mmsearch.errors import ModelLoadError, first_line

from .identity import ModelSpec

# Long enough for a slow link to answer one HEAD, short enough to feel immediate when it cannot.
PROBE_TIMEOUT_S = 3.0
# open_clip's default file name inside a hub repo, and the safetensors twin it tries first.
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """The hub client logs every retry; the user gets our one-line error instead."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "open_clip", "")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def hub_file_names(spec: ModelSpec) -> tuple[str, list[str]] | None:
    """(repo id, file names in open_clip's order of preference), or None for a URL-only tag."""
    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not cfg.get("hf_hub"):
        return None
    repo, filename = os.path.split(cfg["hf_hub"])  # 'org/repo/' (trailing slash) means the default name
    names = [filename or HF_WEIGHTS_NAME]
    filename = names[0]
    if filename == HF_WEIGHTS_NAME:
        names.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo, names


def cached_weights(spec: ModelSpec, cache_dir: str | None = None) -> str | None:
    """The checkpoint already in the hub cache, found without touching the network."""
    located = hub_file_names(spec)
    if located is None:
        return None
    repo, names = located
    for name in names:
        found = huggingface_hub.try_to_load_from_cache(repo, name, cache_dir=cache_dir or None)
        if isinstance(found, str):  # otherwise None, or a marker for a file known to be missing
            return found
    return None


def offline() -> bool:
    """HF_HUB_OFFLINE, read now as well: the hub reads it once at import, before the CLI's env applies."""
    return bool(hub.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def probe_timeout() -> float:
    """Ours, unless the user set HF_HUB_ETAG_TIMEOUT (the hub's own knob for its first request)."""
    if "HF_HUB_ETAG_TIMEOUT" in os.environ:
        return float(hub.HF_HUB_ETAG_TIMEOUT)
    return PROBE_TIMEOUT_S


def unreachable(endpoint: str, timeout: float) -> str | None:
    """Why the hub endpoint cannot be reached, or None. Any HTTP answer counts as reachable."""
    try:
        huggingface_hub.get_session().head(endpoint, timeout=timeout)
    except Exception as exc:  # DNS, refused, timed out, TLS, proxy: all mean "no hub from here"
        return first_line(exc)
    return None


def weights_file(spec: ModelSpec, cache_dir: str | None = None) -> tuple[str, bool]:
    """(local checkpoint path, whether it was downloaded now) for a published tag; a clear error if neither."""
    if hub_file_names(spec) is not None:  # a URL-only tag (none in open_clip 3.x) keeps open_clip's own cache
        cached = cached_weights(spec, cache_dir)
        if cached:
            return cached, False
        if offline():
            raise ModelLoadError(download_hint(spec, "HF_HUB_OFFLINE is set and they are not in the hub cache"))
        reason = unreachable(hub.ENDPOINT, probe_timeout())
        if reason:
            raise ModelLoadError(download_hint(spec, f"{hub.ENDPOINT} unreachable: {reason}"))
    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    try:
        with quiet_hub():  # progress bars are tqdm, not logging: they still show
            path = open_clip.download_pretrained(cfg, cache_dir=cache_dir or None)
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        raise ModelLoadError(download_hint(spec, exc)) from None
    if not path:
        raise ModelLoadError(download_hint(spec, "no download location"))
    return path, True


def download_hint(spec: ModelSpec, reason: object) -> str:
    """One line: what failed and the three ways out."""
    return (f"cannot fetch weights {spec.pretrained!r} for model {spec.name!r} ({first_line(reason)[:300]}); "
            f"run 'mmsearch models fetch --model {spec.name} --pretrained {spec.pretrained}' where the hub is "
            f"reachable and copy its cache here (then HF_HUB_OFFLINE=1 uses it), or pass a downloaded file "
            f"with --pretrained FILE (MMSEARCH_PRETRAINED), or use --model tiny offline")
