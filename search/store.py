"""SQL metadata store (SQLAlchemy 2 ORM): the source of truth for items and their vectors.

Every change to vectors bumps ``meta.generation`` in the same transaction and stamps the
vectors it wrote, so a vector index cache can tell exactly what it is missing.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from sqlalchemy import create_engine, delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from mmsearch.errors import DataDirError, first_line
from mmsearch.modalities import MODALITIES

from . import fusion, health, lexical, schema
from .filters import filter_query
from .shared import Shared
from .tags import Tags
from .writes import Batch
from .tables import (CAPTION, CAPTION_SLOT, CONTENT, CONTENT_SLOT, FAILED, FUSED, OK, PENDING, Item, Meta,
                     StoredVector, Vector, vector_id)

def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # A new database only (an existing one keeps its size): a 2 KB vector row fills a 4 KB page alone,
    # 48 % of the vectors table unused (benchmarks/multivector.py); 16 KB pages hold seven.
    cursor.execute("PRAGMA page_size=16384")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (search, web) never block the indexer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _modality(space: str) -> str:
    if space not in MODALITIES:
        raise ValueError(f"unknown vector space {space!r}")
    return space


def _space_query(space: str, query):
    """Restrict a query over Vector to one space's items: those with a content vector (of one modality)."""
    query = query.where(Vector.item_id.in_(select(Vector.item_id).where(Vector.slot == CONTENT_SLOT)))
    return query if space == FUSED else query.join(Item).where(Item.modality == _modality(space))


def _vector_ids(rows) -> np.ndarray:
    if not rows:
        return np.zeros(0, np.int64)
    pairs = np.asarray([(row[0], row[1]) for row in rows], dtype=np.int64)
    return vector_id(pairs[:, 0], pairs[:, 1])


class Store:
    """Opens (and creates) the database behind one SQLAlchemy URL; ``migrate`` upgrades an older one first."""

    def __init__(self, url: str, migrate: bool = False):
        self.url = url
        try:
            self.engine = create_engine(url)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self.schema_change = (schema.upgrade if migrate else schema.ensure)(self.engine)
        except DataDirError:
            raise
        except Exception as exc:  # SQLAlchemyError, or a bad URL / missing driver
            raise DataDirError(f"cannot open database {_safe_url(url)}: {first_line(exc)}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)  # the schema: search.schema
        self.tags = Tags(self)  # tag sets and each item's tags (search.tags)
        self.shared = Shared(self)  # the database's id and lock, for processes sharing a vector store

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception (Ctrl-C included)."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- meta -------------------------------------------------------------------------------------
    @staticmethod
    def _get(session: Session, key: str) -> Any:
        row = session.get(Meta, key)
        try:
            return None if row is None else json.loads(row.value)
        except ValueError:
            raise DataDirError(f"database meta entry {key!r} is damaged") from None

    @staticmethod
    def _set(session: Session, key: str, value: Any) -> None:
        session.merge(Meta(key=key, value=json.dumps(value, sort_keys=True)))

    def get_meta(self, key: str) -> Any:
        with self.session() as session:
            return self._get(session, key)

    def set_meta(self, key: str, value: Any) -> None:
        with self.session() as session:
            self._set(session, key, value)

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def bump_generation(self, session: Session) -> int:
        """Take the next generation inside the caller's transaction."""
        generation = int(self._get(session, "generation") or 0) + 1
        self._set(session, "generation", generation)
        return generation

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """One batch of the indexer's writes in one transaction, under one new generation."""
        with self.session() as session:
            yield Batch(session, self.bump_generation(session))

    def index_rows(self) -> list[tuple]:
        """Every item as (id, path, modality, size, mtime_ns, content_hash, status, caption, layout): what an
        index run plans from."""
        with self.session() as session:
            return [tuple(r) for r in session.execute(select(
                Item.id, Item.path, Item.modality, Item.size, Item.mtime_ns, Item.content_hash, Item.status,
                Item.caption, Item.layout))]

    # --- vectors ----------------------------------------------------------------------------------
    def vector_ids(self, space: str = FUSED) -> np.ndarray:
        """Vector index ids (tables.vector_id) of every vector of the items with a content vector in this
        space (FUSED: all of them; a modality: that modality's items)."""
        with self.session() as session:
            rows = session.execute(_space_query(space, select(Vector.item_id, Vector.slot))).all()
        return _vector_ids(rows)

    def vector_count(self, space: str = FUSED) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(
                _space_query(space, select(Vector.item_id)).subquery())))

    def iter_vectors(self, since_generation: int | None = None, ids: Sequence[int] | None = None,
                     batch: int = 10_000, space: str = FUSED) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (vector ids, matrix) chunks of one space's vectors, every vector of each item (content,
        caption, passages, segments), so a rebuild never holds two copies of a collection. ``ids``: only
        these items; ``since_generation``: only items with a vector written after it."""
        if ids is not None:  # bounded IN lists: databases cap the number of bound parameters
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start:start + 500]]
                yield from self._space_vectors(space, since_generation, chunk, batch)
        else:
            yield from self._space_vectors(space, since_generation, None, batch)

    def _space_vectors(self, space: str, since_generation: int | None, ids: list[int] | None, batch: int
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        query = _space_query(space, select(Vector.item_id, Vector.slot, Vector.data)).order_by(Vector.item_id,
                                                                                               Vector.slot)
        if since_generation is not None:
            query = query.where(Vector.item_id.in_(select(Vector.item_id)
                                                   .where(Vector.generation > since_generation)))
        if ids is not None:
            query = query.where(Vector.item_id.in_(ids))
        with self.session() as session:
            rows = session.execute(query.execution_options(yield_per=batch))
            while chunk := rows.fetchmany(batch):
                yield _vector_ids(chunk), _stack([np.frombuffer(data, dtype="<f4") for _, _, data in chunk])

    def item_vectors(self, ids: Sequence[int], weights: Mapping[str, float],
                     own: Mapping[int, list[StoredVector]] | None = None) -> dict[int, np.ndarray]:
        """Each item's one vector, as --like, near-duplicate checks and explain use it (fusion.item_vector),
        from ``own`` (part_vectors of these items, when the caller holds them) or SQL; items without a
        content vector are left out."""
        own = self.part_vectors(ids) if own is None else own
        held, modality = list(own), {}
        with self.session() as session:
            for start in range(0, len(held), 500):  # bounded IN lists, as part_vectors reads them
                modality.update(session.execute(select(Item.id, Item.modality)
                                                .where(Item.id.in_(held[start:start + 500]))).all())
        fused = {i: fusion.item_vector(rows, modality.get(i, ""), weights) for i, rows in own.items()}
        return {i: vector for i, vector in fused.items() if vector is not None and i in modality}

    def part_vectors(self, ids: Sequence[int], data: bool = True) -> dict[int, list[StoredVector]]:
        """Each item's stored vectors in slot order (content, caption, passages or segments); ``data``
        False leaves the vectors out (their kinds and spans only)."""
        out: dict[int, list[StoredVector]] = {}
        columns = [Vector.item_id, Vector.slot, Vector.kind, Vector.span_start, Vector.span_end]
        with self.session() as session:
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start:start + 500]]
                rows = session.execute(select(*columns, *([Vector.data] if data else []))
                                       .where(Vector.item_id.in_(chunk)).order_by(Vector.item_id, Vector.slot))
                for row in rows:
                    vector = np.frombuffer(row[5], dtype="<f4").copy() if data else None
                    out.setdefault(row[0], []).append(StoredVector(*row[:5], vector))
        return out

    def item_vector(self, item_id: int, kind: str = CONTENT) -> np.ndarray | None:
        """An item's content or caption vector, as stored."""
        with self.session() as session:
            row = session.get(Vector, (item_id, CAPTION_SLOT if kind == CAPTION else CONTENT_SLOT))
            return None if row is None else row.array().copy()

    # --- items ------------------------------------------------------------------------------------
    def items_by_id(self, ids: Iterable[int]) -> dict[int, Item]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        with self.session() as session:
            return {item.id: item for item in session.scalars(select(Item).where(Item.id.in_(ids)))}

    def get_item(self, item_id: int) -> Item | None:
        with self.session() as session:
            return session.get(Item, item_id)

    def filter_ids(self, filters: Any) -> np.ndarray:
        """Ids of items with a vector that pass the filters (a search.request.Filters)."""
        query = filter_query(filters, sqlite=self.engine.dialect.name == "sqlite")
        with self.session() as session:
            return np.asarray(session.scalars(query).all(), dtype=np.int64)

    def ids_with_hashes(self, hashes: Sequence[str]) -> np.ndarray:
        with self.session() as session:
            ids = session.scalars(select(Item.id).where(Item.content_hash.in_(list(hashes)))).all()
        return np.asarray(ids, dtype=np.int64)

    def ids_under(self, path: str) -> list[int]:
        """Items at this exact path or anywhere below it as a folder."""
        folder = path.rstrip(os.sep) + os.sep
        with self.session() as session:
            return list(session.scalars(select(Item.id).where(
                (Item.path == path) | (func.substr(Item.path, 1, len(folder)) == folder))))

    def remove_ids(self, ids: Sequence[int], chunk: int = 500) -> int:
        """Delete items and their vectors in one transaction; returns how many existed."""
        ids = [int(i) for i in ids]
        removed = 0
        with self.session() as session:
            for start in range(0, len(ids), chunk):
                part = ids[start:start + chunk]
                session.execute(delete(Vector).where(Vector.item_id.in_(part)))
                removed += session.execute(delete(Item).where(Item.id.in_(part))).rowcount
            if removed:
                self.bump_generation(session)
        return removed

    def analyze(self) -> None:
        """Refresh SQLite's planner statistics after bulk changes (PostgreSQL's autovacuum does this itself):
        without them a path filter keeping 1 % read nearly all items through the status index. A full
        ANALYZE (~60 ms per 100k items); a sampled one (analysis_limit) misjudged the status column too."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()

    def failures(self, limit: int) -> list[dict[str, str]]:
        with self.session() as session:
            rows = session.execute(select(Item.path, Item.error).where(Item.status == FAILED)
                                   .order_by(Item.path).limit(limit))
            return [{"path": path, "error": error} for path, error in rows]

    def counts(self) -> dict[str, Any]:
        """Items by status and modality, vectors by kind (search.health)."""
        with self.session() as session:
            return health.counts(session)

    def replace_encoder(self, scope: str | None, meta: Mapping[str, Any]) -> None:
        """In one transaction: record a new encoder in meta and drop the vectors it replaces (``scope``
        "all", or one modality's; None: none), so their items wait to be embedded again."""
        with self.session() as session:
            if scope is not None:
                self.mark_pending(session, None if scope == "all" else scope)
            for key, value in meta.items():
                self._set(session, key, value)

    def vector_problems(self, encoder: str, dim: int) -> list[str]:
        """Disagreements within SQL (search.health.vector_problems), the full-text index's included."""
        with self.session() as session:
            return health.vector_problems(session, encoder, dim, self._get(session, "audio_key")) + \
                lexical.problems(session, self.engine.dialect.name)

    def rebuild_lexical(self) -> None:
        """The full-text index made again from the items (verify --repair)."""
        with self.session() as session:
            lexical.rebuild(session, self.engine.dialect.name)

    def mark_pending(self, session: Session, modality: str | None = None) -> None:
        """Drop the vectors of every item (or of one modality): a new encoder is taking over."""
        items = select(Item.id) if modality is None else select(Item.id).where(Item.modality == modality)
        session.execute(delete(Vector).where(Vector.item_id.in_(items)))
        session.execute(update(Item).where(Item.status == OK, Item.id.in_(items))
                        .values(status=PENDING, error="waiting to be embedded"))
        self.bump_generation(session)

    def lexical(self, text: str, limit: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(id, score) of the ok items whose name, path, caption or text hold the query's words, best first.
        On a bare connection: one read needs no ORM session, which cost hybrid search ~0.3 ms a query."""
        with self.engine.connect() as connection:
            return lexical.search(connection, self.engine.dialect.name, text, limit, allowed)


def _stack(vectors: list[np.ndarray]) -> np.ndarray:
    if len({len(v) for v in vectors}) > 1:  # only a damaged database: every encoder change re-embeds all
        raise DataDirError("SQL holds vectors of different dimensions; run 'mmsearch verify', then "
                           "'mmsearch index --reembed'")
    return np.stack(vectors)


def _safe_url(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
