"""The data dir: the folder that holds one collection's database, index cache files and write lock."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DataDirError, LockedError

LOCK_FILE = "write.lock"


class DataDir:
    def __init__(self, path: Path, create: bool = True):
        """``create`` False (read-only commands): a data dir that does not exist is an error, and nothing is
        made, so a mistyped --data-dir never leaves an empty collection behind."""
        self.path = path
        if create:
            _prepare(path)
        elif not path.is_dir():
            raise DataDirError(f"no data dir at {path}: nothing indexed yet (run 'mmsearch index PATH', "
                               f"or pass --data-dir)")

    def file(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer per data dir; readers never wait."""
        try:
            handle = open(self.path / LOCK_FILE, "a")
        except OSError as exc:
            raise DataDirError(f"data dir {self.path} is not writable: {exc.strerror or exc}") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"another mmsearch process is writing to {self.path}; "
                                  f"wait for it to finish") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data dir {path} exists and is not a folder") from None
    except OSError as exc:
        raise DataDirError(f"cannot create data dir {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataDirError(f"data dir {path} is not readable")
