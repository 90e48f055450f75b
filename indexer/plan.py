"""Planning an index run: what the scan found, set against what SQL holds, becomes a list of tasks (new,
changed, waiting to be embedded, caption changed) and a list of vanished items; the rest is unchanged."""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from typing import Any

from mmsearch.modalities import sidecar_of
from mmsearch.search.tables import FAILED, LAYOUT, OK, PENDING

from .decode import DecodeError, decode_text
from .scan import FileEntry, ScanResult, under


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    tagged: int = 0  # items the stored tag sets tagged after the run (setting tag_on_index)
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    scan_errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        keys = ("added", "updated", "moved", "removed", "unchanged", "failed", "tagged")
        return {**{k: getattr(self, k) for k in keys}, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Row:
    """What planning needs of a stored item (mmsearch.search.store.Store.index_rows)."""
    id: int
    path: str
    modality: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    caption: str | None
    layout: int | None = None

    def needs_parts(self, embeddable: frozenset[str]) -> bool:
        """Indexed before passages and segments existed: a note or a sound to embed again, whole."""
        return self.status == OK and self.modality in embeddable & PARTED and (self.layout or 0) < LAYOUT


PARTED = frozenset({"text", "audio"})  # the modalities whose items may have passages or segments


@dataclass
class Task:
    entry: FileEntry
    row: Row | None  # the row at the same path, if any
    caption_only: bool = False  # the file is unchanged, its caption sidecar is not
    upgrade: bool = False  # the file is unchanged, its passages or segments are still to be made


@dataclass
class Plan:
    tasks: list[Task]
    vanished: list[Row]  # under the roots in SQL, no longer on disk (unless a task claims them as moved)
    by_hash: dict[str, list[Row]]
    unchanged: int


def plan(rows: list[Row], scanned: ScanResult, roots: list[str], embeddable: frozenset[str],
         max_text_chars: int) -> Plan:
    by_path = {row.path: row for row in rows}
    by_hash: dict[str, list[Row]] = collections.defaultdict(list)
    for row in rows:
        if row.content_hash:
            by_hash[row.content_hash].append(row)
    tasks, unchanged = [], 0
    for path, entry in scanned.files.items():
        row = by_path.get(path)
        if row is None:
            tasks.append(Task(entry, None))
        elif (row.size, row.mtime_ns) != (entry.size, entry.mtime_ns):
            tasks.append(Task(entry, row))
        elif row.status == PENDING and row.modality in embeddable:
            tasks.append(Task(entry, row))
        elif row.needs_parts(embeddable):
            tasks.append(Task(entry, row, upgrade=True))
        elif row.status != FAILED and row.caption != read_caption(entry.caption_path, max_text_chars):
            tasks.append(Task(entry, row, caption_only=True))
        else:
            unchanged += 1
    # Items waiting for a vector or their parts elsewhere (e.g. after --reembed, or indexed before passages
    # and segments existed) are embedded too, wherever they live: a data dir is never left half-old.
    for row in rows:
        waiting = row.status == PENDING and row.modality in embeddable
        if ((waiting or row.needs_parts(embeddable)) and row.path not in scanned.files
                and not under(row.path, roots) and os.path.isfile(row.path)):
            info = os.stat(row.path)
            tasks.append(Task(FileEntry(row.path, row.modality, info.st_size, info.st_mtime_ns,
                                        sidecar_of(row.path)), row, upgrade=not waiting))
    vanished = [row for row in rows if under(row.path, roots) and row.path not in scanned.files]
    return Plan(tasks, vanished, by_hash, unchanged)


def read_caption(path: str | None, max_chars: int) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return decode_text(handle.read(), max_chars).text
    except (OSError, DecodeError):
        return None
