"""Reading a person's labels: LABELS.txt (one label a line, for zero-shot tagging) and LABELS.csv
(``path,label`` rows, several rows for an item with several labels, for training and for evaluating a tag
set). Files are hostile: every refusal names the line, and nothing is read half."""
from __future__ import annotations

import csv
import io
import os
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import MMSearchError

MAX_LABELS = 1000  # zero-shot scores every item against every label (ImageNet has 1000): more is a mistake
MAX_LABEL_CHARS = 200
MAX_FILE_BYTES = 64 * 2**20


def _read(path: str) -> str:
    """A labels file's text ('-' is stdin), UTF-8 (a BOM allowed), at most MAX_FILE_BYTES."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(os.path.expanduser(path), "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise MMSearchError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise MMSearchError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MMSearchError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def check_label(label: str, where: str) -> str:
    """A label as stored: trimmed, non-empty, at most MAX_LABEL_CHARS, no control characters."""
    label = label.strip()
    if not label:
        raise MMSearchError(f"{where}: the label is empty")
    if len(label) > MAX_LABEL_CHARS:
        raise MMSearchError(f"{where}: the label is longer than {MAX_LABEL_CHARS} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in label):
        raise MMSearchError(f"{where}: the label holds a control character")
    return label


SHOWN_LINES = 5  # line numbers an error lists


def _too_few(labels: Mapping[str, Any], lines: list[int], total: int) -> str:
    """What a file with fewer than two different labels holds: none, or its one label and the first of the
    ``total`` lines that give it (``lines``)."""
    if not labels:
        return "no labels"
    shown = ", ".join(map(str, lines[:SHOWN_LINES])) + (f", … {total - SHOWN_LINES} more" if total > SHOWN_LINES
                                                        else "")
    return (f"only {next(iter(labels))[:80]!r}, on " + ("line " if total == 1 else "lines ") + shown +
            (" (a label given again counts once)" if total > 1 else ""))


def read_label_list(path: str) -> list[str]:
    """LABELS.txt: one label a line; blank lines and lines starting with # are skipped, repeats kept once."""
    labels: dict[str, None] = {}
    lines: list[int] = []  # the lines that give a label
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            labels[check_label(line, f"{path} line {number}")] = None
            lines.append(number)
    if len(labels) < 2:
        raise MMSearchError(f"{path}: zero-shot tagging needs at least two different labels, one per line; "
                            f"found {_too_few(labels, lines, len(lines))}")
    if len(labels) > MAX_LABELS:
        raise MMSearchError(f"{path}: more than {MAX_LABELS} labels")
    return list(labels)


@dataclass
class Labelled:
    """Items and their labels: ``targets[i, j]`` is True when item ``ids[i]`` has label ``labels[j]``."""
    ids: np.ndarray  # int64
    labels: list[str]
    targets: np.ndarray  # (items, labels) bool

    @property
    def multi_label(self) -> bool:
        return bool((self.targets.sum(axis=1) > 1).any())


def read_labelled(path: str, paths: Mapping[str, int]) -> Labelled:
    """LABELS.csv → Labelled, with ``paths`` (stored absolute path → item id) to find each item. A header
    row is optional and, when there, exactly ``path,label`` (any case); a first row that is neither that nor
    an indexed item's is refused as a bad header. Relative paths are taken from the file's folder (stdin's:
    the current one), as evaluate takes a queries file's. A path that is not indexed (named as given and as
    resolved), or a row without two fields, refuses the file with its line."""
    text = _read(path)
    base = os.getcwd() if path == "-" else os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    reader = csv.reader(io.StringIO(text))
    try:
        return _labelled(path, base, reader, paths)
    except csv.Error as exc:  # a field beyond csv's limit, a NUL byte
        raise MMSearchError(f"{path} line {reader.line_num}: not CSV: {exc}") from None


def _labelled(path: str, base: str, reader: Any, paths: Mapping[str, int]) -> Labelled:
    rows: dict[int, dict[str, None]] = {}
    labels: dict[str, None] = {}
    lines: list[int] = []  # the first data rows' lines (all of one label when there is only one)
    total = 0  # data rows
    first = True  # the first row that is not blank may be the header
    for row in reader:
        where = f"{path} line {reader.line_num}"
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise MMSearchError(f"{where}: want two fields, path,label; found {len(row)}")
        first, header = False, first
        if header and [c.strip().lower() for c in row] == ["path", "label"]:
            continue
        file, label = row[0].strip(), check_label(row[1], where)
        full = os.path.abspath(os.path.join(base, os.path.expanduser(file)))
        item = paths.get(full) if file else None
        if item is None and header:
            raise MMSearchError(f"{where}: {','.join(row)[:120]!r} is neither the header path,label nor a row of "
                                f"an indexed item ({full}); a header, if any, must be exactly path,label")
        if item is None:
            raise MMSearchError(f"{where}: {file[:200] or 'an empty path'} is not an indexed item"
                                + (f" ({full})" if file else ""))
        rows.setdefault(item, {})[label] = None
        labels[label] = None
        total += 1
        if len(lines) < SHOWN_LINES:
            lines.append(reader.line_num)
    if len(labels) < 2:
        raise MMSearchError(f"{path}: need items of at least two different labels; found "
                            f"{_too_few(labels, lines, total)}")
    if len(labels) > MAX_LABELS:
        raise MMSearchError(f"{path}: more than {MAX_LABELS} labels")
    order = {label: n for n, label in enumerate(labels)}
    ids = np.fromiter(rows, np.int64, len(rows))
    targets = np.zeros((len(rows), len(labels)), bool)
    for n, item_labels in enumerate(rows.values()):
        targets[n, [order[label] for label in item_labels]] = True
    return Labelled(ids, list(labels), targets)
