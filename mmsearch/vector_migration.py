"""Moving a data dir's vector index to another vector store (setting vector_store; mmsearch migrate-vectors).

The vector index is a checked cache of SQL, so nothing is copied from the old store: the IndexCache that the
new setting makes fills the new store from SQL (its own rebuild, the one loader), under the data dir's write
lock, and checks it as verify does. Only a store that verified is reported, and only then may the old one
be removed. The old store is never opened otherwise, so a data dir can leave Milvus without pymilvus.

Settings are not kept in the data dir (defaults < config file < environment < flags: mmsearch.settings), so
nothing here can switch the data dir over: the report says which setting to use from now on.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mmsearch.errors import MMSearchError, first_line
from mmsearch.search.milvus_index import milvus_uri

from .index_cache import IndexCache
from .library import Library
from .modalities import MODALITIES
from .settings import Settings


def location(settings: Settings) -> str:
    """Where a setting keeps the vectors, one spelling per place: faiss (the data dir's files), a milvus-lite
    path made absolute, or a server's URI."""
    return milvus_uri(str(settings.vector_store), settings.data_path) or "faiss"


def migrate_vectors(settings: Settings, target: str, remove_source: bool = False) -> dict[str, Any]:
    """Fill the store ``target`` (vector_store's syntax) from SQL, verify it, and (``remove_source``, only after
    it verified) delete the current one; what was moved, per modality, and the setting to use from now on.
    A bad, unreachable or current target, or a missing pymilvus, is an MMSearchError before anything changes."""
    new = settings.replace(vector_store=target)  # parsed as the setting is: one line naming the spellings
    source, to = str(settings.vector_store), str(new.vector_store)
    if location(new) == location(settings):
        raise MMSearchError(f"the vector store is already {source} (setting vector_store, from "
                            f"{settings.source('vector_store')}): nothing to migrate")
    _check_lite_path(new)
    library = Library(new, existing=True)  # a missing pymilvus: one line, said now
    started = time.perf_counter()
    if not any(library.store.vector_count(space) for space in MODALITIES):  # before the new store is reached
        raise MMSearchError(f"nothing indexed yet in {settings.data_path}: no vectors to move")
    with library.write_lock():  # no index run changes SQL while the new store is filled from it
        sql = {space: library.store.vector_count(space) for space in MODALITIES}
        library.cache.rebuild()  # the new store's parts dropped and built from SQL, then saved
        parts = library.index().parts
        moved = {space: parts[space].ntotal for space in MODALITIES}
        problems = library.cache.problems() + [
            f"{space} part: {moved[space]} vectors, SQL holds {sql[space]}" for space in MODALITIES
            if moved[space] != sql[space]]
        if problems:
            raise MMSearchError(f"the new vector store {to} does not agree with SQL: {problems[0]}"
                                f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; keep "
                                f"vector_store = {source!r} (nothing was removed) and run 'mmsearch verify'")
        removed = _remove(settings, library) if remove_source else []
    return {"from": source, "to": to, "vectors": moved, "types": {s: parts[s].state.factory for s in MODALITIES},
            "problems": [], "removed": removed, "setting": {"config": f'vector_store = "{to}"',
                                                            "env": f"MMSEARCH_VECTOR_STORE={to}"},
            "seconds": round(time.perf_counter() - started, 2)}


def _check_lite_path(settings: Settings) -> None:
    """milvus-lite keeps a store in a folder of that name: an existing file there (the SQLite database, say)
    is refused before milvus-lite is started on it."""
    uri = milvus_uri(str(settings.vector_store), settings.data_path)
    if uri is not None and "://" not in uri and Path(uri).exists() and not Path(uri).is_dir():
        raise MMSearchError(f"{uri} is a file, not a milvus-lite store: choose another milvus:PATH.db")


def _remove(settings: Settings, library: Library) -> list[str]:
    """Delete the old store's parts (the new one verified) through the IndexCache the old setting makes: its
    FAISS files, or its Milvus collections. One that cannot be deleted is one error line saying that the
    move itself is done."""
    try:
        return IndexCache(settings, library.store, settings.data_path).drop()
    except (OSError, MMSearchError) as exc:
        raise MMSearchError(f"the vectors were moved to {library.settings.vector_store} and verified, but the "
                            f"old store could not be removed: {first_line(exc)}") from None
