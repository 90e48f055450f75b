"""What the processes that share one database agree on through it (``store.shared``): the database's own id,
which names its collections in a vector store several databases may share (a Milvus server), and a lock
each process holds while it changes such a shared store (catching it up on SQL, rebuilding it), so two
servers and an index run never apply changes of different generations to it at once.

The lock is the database's where it has one to offer: a PostgreSQL advisory lock, held on a connection of
its own for as long as the change takes. SQLite is a file on one machine: there it is an flock on a file
beside the database (an in-memory database is one process's: a lock of this process suffices).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from .schema import in_memory
from .tables import Meta

if TYPE_CHECKING:
    from .store import Store

DATABASE_ID = "database_id"  # meta key: 12 hex digits, made once by the first process that asks
_LOCAL = threading.Lock()  # an in-memory SQLite database's lock (one process)


class Shared:
    def __init__(self, store: "Store"):
        self.store = store
        self._id: str | None = None

    def database_id(self) -> str:
        """This database's id: read, or made by the first process to ask (another one racing it wins if
        it commits first: both then read the same id)."""
        if self._id is None:
            found = self.store.get_meta(DATABASE_ID)
            if found is None:
                try:
                    with self.store.session() as session:
                        session.add(Meta(key=DATABASE_ID, value=f'"{secrets.token_hex(6)}"'))
                except IntegrityError:
                    pass  # made meanwhile by another process
                found = self.store.get_meta(DATABASE_ID)
            self._id = str(found)
        return self._id

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the database-wide lock ``name`` (blocking until it is free)."""
        engine = self.store.engine
        if engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha1(f"mmsearch:{name}".encode()).digest()[:8], "big", signed=True)
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                connection.commit()  # the lock is the session's, not a transaction's: no transaction held open
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
            return
        if in_memory(engine):
            with _LOCAL:
                yield
            return
        fd = os.open(f"{engine.url.database}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock
