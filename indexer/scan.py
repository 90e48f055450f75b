"""Walk folders and name each media file's modality by extension; pair caption sidecars with media."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from mmsearch.modalities import TEXT, captions, modality_of

@dataclass(frozen=True)
class FileEntry:
    path: str
    modality: str
    size: int
    mtime_ns: int
    caption_path: str | None = None


@dataclass
class ScanResult:
    files: dict[str, FileEntry] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)  # caption file -> media file it describes
    errors: list[str] = field(default_factory=list)


def scan(roots: Iterable[str | os.PathLike]) -> ScanResult:
    """Every media file under the roots (files may be roots too). Hidden names are skipped; directory
    symlinks are followed once each, so loops end."""
    result = ScanResult()
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        if os.path.isdir(root):
            _walk(root, result, seen_dirs)
        elif os.path.isfile(root):
            folder = os.path.dirname(root)
            names = [n for n in os.listdir(folder) if not n.startswith(".")]
            _add_folder_files(folder, names, result, only=os.path.basename(root))
        else:
            raise FileNotFoundError(root)
    return result


def _walk(folder: str, result: ScanResult, seen: set[tuple[int, int]]) -> None:
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as entries:
            children = sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        result.errors.append(f"{folder}: {exc.strerror or exc}")
        return
    names, linked_dirs = [], []
    for entry in children:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                _walk(entry.path, result, seen)
            elif entry.is_dir():
                linked_dirs.append(entry.path)  # after the real folders, so a link never claims their files
            elif entry.is_file():
                names.append(entry.name)
        except OSError as exc:
            result.errors.append(f"{entry.path}: {exc.strerror or exc}")
    for path in linked_dirs:
        _walk(path, result, seen)
    _add_folder_files(folder, names, result)


def _add_folder_files(folder: str, names: list[str], result: ScanResult, only: str | None = None) -> None:
    """Add the media among ``names`` (all visible files of ``folder``), or just ``only`` when given."""
    pairs = captions(names)
    sidecars = set(pairs.values())
    for name in names:
        modality = modality_of(name)
        if modality is None or (only is not None and name != only):
            continue
        if not _utf8(name):  # the database stores text; such a name cannot be stored faithfully
            result.errors.append(f"{os.fsencode(os.path.join(folder, name))!r}: file name is not valid UTF-8; "
                                 f"rename it")
            continue
        path = os.path.join(folder, name)
        if modality == TEXT and name in sidecars:
            continue  # a sidecar, stored on its media item
        caption = os.path.join(folder, pairs[name]) if name in pairs else None
        try:
            info = os.stat(path)
        except OSError as exc:
            result.errors.append(f"{path}: {exc.strerror or exc}")
            continue
        result.files[path] = FileEntry(path, modality, info.st_size, info.st_mtime_ns, caption)
        if caption:
            result.captions[caption] = path


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def absolute_roots(roots: Iterable[str | os.PathLike]) -> list[str]:
    return [os.path.abspath(os.path.expanduser(os.fspath(r))) for r in roots]
