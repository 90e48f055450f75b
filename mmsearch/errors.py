"""Errors a user can act on. Anything else reaching the CLI is a bug and keeps its traceback."""
from __future__ import annotations


def first_line(reason: object, limit: int = 200) -> str:
    """A library's error (or an exception's 'orig', from SQLAlchemy) as one line for a message of ours."""
    text = str(getattr(reason, "orig", None) or reason).strip()
    return text.splitlines()[0][:limit] if text else type(reason).__name__


class MMSearchError(Exception):
    """A problem with input, configuration or stored data, explained in one line. ``code`` names its kind
    in JSON errors, the CLI's (--json) and the API's alike."""

    code = "bad_request"


class ModelLoadError(MMSearchError):
    """Weights or a model config could not be loaded."""

    code = "model_load"


class ModelMismatchError(MMSearchError):
    """The data dir was built with another model."""

    code = "model_mismatch"


class DataDirError(MMSearchError):
    """The data dir or database cannot be opened or written."""

    code = "data_dir"


class NotFoundError(MMSearchError):
    """Something asked for by name is not there (a tag set); the API answers 404."""

    code = "not_found"
    status = 404


class LockedError(MMSearchError):
    """Another process is writing to the same data dir."""

    code = "locked"
