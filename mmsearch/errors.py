"""Errors a user can act on. Anything else reaching the CLI is a bug and keeps its traceback."""


class MMSearchError(Exception):
    """A problem with input, configuration or stored data, explained in one line."""


class ModelLoadError(MMSearchError):
    """Weights or a model config could not be loaded."""


class ModelMismatchError(MMSearchError):
    """The data dir was built with another model."""


class DataDirError(MMSearchError):
    """The data dir or database cannot be opened or written."""


class LockedError(MMSearchError):
    """Another process is writing to the same data dir."""
