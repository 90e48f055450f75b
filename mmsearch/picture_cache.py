"""The picture cache's check: the thumbnails and waveforms web.media draws on demand in the data dir, and the
temporary files a killed writer left (of pictures and of index files alike: mmsearch.files.atomic_write)."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mmsearch.search.store import Store

PICTURES = "thumbnails"  # web.media.cache_dir: {id}-{size}-{mtime_ns}-{variant}.jpg|png, each written via a *.tmp
SIGNATURES = {".jpg": (b"\xff\xd8\xff", b"\xff\xd9"), ".png": (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82")}


class PictureCache:
    """The thumbnails and waveforms web.media draws on demand, named by item id, file size and mtime. A
    stale picture (its item removed or changed) is only unused; an unreadable one would be served, and a
    *.tmp a stopped process left is never finished: those two are problems. Clearing empties the folder,
    and each picture is drawn again on its next request."""

    def __init__(self, folder: Path, store: Store):
        self.folder = folder
        self.store = store

    def files(self) -> dict[str, list[Path]]:
        """Its files by state: in flight (being written), unfinished, stale, unreadable, usable."""
        out: dict[str, list[Path]] = {k: [] for k in ("in flight", "unfinished", "stale", "unreadable", "usable")}
        try:
            paths = sorted(p for p in self.folder.iterdir() if p.is_file())
        except OSError:  # no cache yet
            return out
        current = {f"{row[0]}-{row[3]}-{row[4]}" for row in self.store.index_rows()} if paths else set()
        unfinished = set(unfinished_writes(self.folder, "*.tmp"))
        for path in paths:
            if path.suffix == ".tmp":
                state = "unfinished" if path in unfinished else "in flight"
            elif path.name.rsplit("-", 1)[0] not in current:
                state = "stale"
            else:
                state = "usable" if _whole(path) else "unreadable"
            out[state].append(path)
        return out

    def problems(self) -> list[str]:
        files = self.files()
        return [f"picture cache: {len(files[state])} {state} file(s), e.g. {files[state][0].name}"
                for state in ("unreadable", "unfinished") if files[state]]

    def clear(self) -> dict[str, int]:
        """Delete every file but writes in flight; how many of each state went."""
        removed = {}
        for state, paths in self.files().items():
            if state != "in flight" and paths:
                removed[state] = sum(_unlink(path) for path in paths)
        return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink(missing_ok=True)
        return True
    except OSError:
        return False


def unfinished_writes(folder: Path, pattern: str, remove: bool = False) -> list[Path]:
    """The temporary files matching ``pattern`` that mmsearch.files.atomic_write left when its process died
    mid-write (SIGKILL, power loss): nobody holds their lock. Removed too when ``remove``."""
    found = []
    for path in sorted(folder.glob(pattern)):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # moved in place meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if remove:
                path.unlink(missing_ok=True)
            found.append(path)
        except OSError:  # locked: a live process is writing it (or a read-only data dir)
            pass
        finally:
            os.close(fd)
    return found


def _whole(path: Path) -> bool:
    """The file starts and ends as its format does (a cut-short or overwritten picture does not)."""
    head, tail = SIGNATURES.get(path.suffix, (b"?", b"?"))
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(head))
            handle.seek(max(0, path.stat().st_size - len(tail)))
            return start == head and handle.read() == tail
    except OSError:
        return False
