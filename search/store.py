"""SQL metadata store (SQLAlchemy 2 ORM): the source of truth for items and their vectors.

Every change to vectors bumps ``meta.generation`` in the same transaction and stamps the
vectors it wrote, so a vector index cache can tell exactly what it is missing.
"""
from __future__ import annotations

import itertools
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

from . import schema
from .filters import filter_query
from .fusion import fuse_parts
from .writes import Batch
from .tables import CAPTION, CONTENT, FAILED, FUSED, OK, PENDING, Item, Meta, Vector

def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
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
    query = query.where(Vector.part == CONTENT)
    return query if space == FUSED else query.join(Item).where(Item.modality == _modality(space))


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
        """Every item as (id, path, modality, size, mtime_ns, content_hash, status, caption): what an index
        run plans from."""
        with self.session() as session:
            return [tuple(r) for r in session.execute(select(
                Item.id, Item.path, Item.modality, Item.size, Item.mtime_ns, Item.content_hash, Item.status,
                Item.caption))]

    # --- vectors ----------------------------------------------------------------------------------
    def vector_ids(self, space: str = FUSED) -> np.ndarray:
        """Ids of the items with a vector in this space (FUSED, or a modality: the main index's part of that modality's items)."""
        with self.session() as session:
            ids = session.scalars(_space_query(space, select(Vector.item_id))).all()
        return np.asarray(ids, dtype=np.int64)

    def vector_count(self, space: str = FUSED) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(
                _space_query(space, select(Vector.item_id)).subquery())))

    def iter_vectors(self, weights: Mapping[str, float], since_generation: int | None = None,
                     ids: Sequence[int] | None = None, batch: int = 10_000, space: str = FUSED
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, matrix) chunks of one space's vectors, so a rebuild never holds two copies of a collection.

        A fused item vector is its content vector, or normalise(w[modality]·content + w[text]·caption) for an
        item with a caption; weights live in configuration, so changing them only rebuilds the index."""
        if ids is not None:  # bounded IN lists: databases cap the number of bound parameters
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start:start + 500]]
                yield from self._space_vectors(space, weights, since_generation, chunk, batch)
        else:
            yield from self._space_vectors(space, weights, since_generation, None, batch)

    def _space_vectors(self, space: str, weights: Mapping[str, float], since_generation: int | None,
                       ids: list[int] | None, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        has_content = select(Vector.item_id).where(Vector.part == CONTENT)
        query = (select(Vector.item_id, Vector.part, Vector.data, Item.modality).join(Item)
                 .where(Vector.part.in_((CONTENT, CAPTION)), Vector.item_id.in_(has_content))
                 .order_by(Vector.item_id, Vector.part))
        if space != FUSED:
            query = query.where(Item.modality == _modality(space))
        if since_generation is not None:
            query = query.where(Vector.item_id.in_(select(Vector.item_id)
                                                   .where(Vector.generation > since_generation)))
        if ids is not None:
            query = query.where(Vector.item_id.in_(ids))
        out_ids: list[int] = []
        out_vectors: list[np.ndarray] = []
        with self.session() as session:
            rows = session.execute(query.execution_options(yield_per=batch))
            for item_id, group in itertools.groupby(rows, key=lambda r: r[0]):
                group = list(group)
                parts = {part: np.frombuffer(data, dtype="<f4") for _, part, data, _ in group}
                out_ids.append(item_id)
                out_vectors.append(fuse_parts(parts, group[0][3], weights))
                if len(out_ids) >= batch:
                    yield np.asarray(out_ids, np.int64), _stack(out_vectors)
                    out_ids, out_vectors = [], []
        if out_ids:
            yield np.asarray(out_ids, np.int64), _stack(out_vectors)

    def space_vectors(self, space: str, ids: Sequence[int], weights: Mapping[str, float]) -> dict[int, np.ndarray]:
        """Some items' vectors in one space, by id (items without one are left out)."""
        return {int(i): v for chunk_ids, chunk in self.iter_vectors(weights, ids=list(ids), space=space)
                for i, v in zip(chunk_ids, chunk)}

    def part_vectors(self, ids: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
        """Each item's stored vectors by part (content, caption): what its fused vector is made of."""
        out: dict[int, dict[str, np.ndarray]] = {}
        with self.session() as session:
            for start in range(0, len(ids), 500):
                rows = session.execute(select(Vector.item_id, Vector.part, Vector.data)
                                       .where(Vector.item_id.in_([int(i) for i in ids[start:start + 500]])))
                for item_id, part, data in rows:
                    out.setdefault(item_id, {})[part] = np.frombuffer(data, dtype="<f4").copy()
        return out

    def item_vector(self, item_id: int, part: str = CONTENT) -> np.ndarray | None:
        with self.session() as session:
            row = session.get(Vector, (item_id, part))
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
        """Refresh SQLite's planner statistics after bulk changes (PostgreSQL's autovacuum does this itself).
        Without them SQLite guesses every indexed equality selective and reads nearly all items through the
        status index for a path filter that keeps 1 %. A full ANALYZE (~60 ms per 100k items here): a
        sampled one (analysis_limit) misjudged the status column the same way."""
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
        with self.session() as session:
            by_status = dict(session.execute(select(Item.status, func.count()).group_by(Item.status)).all())
            by_modality = dict(session.execute(select(Item.modality, func.count()).where(Item.status != FAILED)
                                               .group_by(Item.modality)).all())
        return {
            "items": sum(n for status, n in by_status.items() if status != FAILED),
            "by_modality": {m: by_modality.get(m, 0) for m in MODALITIES},
            "pending": by_status.get(PENDING, 0),
            "failed": by_status.get(FAILED, 0),
        }

    def replace_encoder(self, scope: str | None, meta: Mapping[str, Any]) -> None:
        """In one transaction: record a new encoder in meta and drop the vectors it replaces (``scope``
        "all", or one modality's; None: none), so their items wait to be embedded again."""
        with self.session() as session:
            if scope is not None:
                self.mark_pending(session, None if scope == "all" else scope)
            for key, value in meta.items():
                self._set(session, key, value)

    def vector_problems(self, encoder: str, dim: int) -> list[str]:
        """Disagreements within SQL: vectors from another encoder (sounds' own from the audio tower in
        meta audio_key, all others from ``encoder``) or of another dimension; ok items without a vector."""
        problems: list[str] = []
        with self.session() as session:
            audio_key = self._get(session, "audio_key")
            own_audio = (Vector.part == CONTENT) & (Item.modality == "audio")
            expected = own_audio & (Vector.encoder == audio_key) | ~own_audio & (Vector.encoder == encoder)
            wrong = session.scalar(select(func.count()).select_from(Vector).join(Item).where(
                (Vector.dim != dim) | ~expected))
            if wrong:
                problems.append(f"{wrong} vectors were made by another model or have the wrong dimension")
            orphans = session.scalar(select(func.count()).select_from(Item).where(
                Item.status == OK, ~Item.vectors.any(Vector.part == CONTENT)))
            if orphans:
                problems.append(f"{orphans} items marked ok have no vector")
        return problems

    def mark_pending(self, session: Session, modality: str | None = None) -> None:
        """Drop the vectors of every item (or of one modality): a new encoder is taking over."""
        items = select(Item.id) if modality is None else select(Item.id).where(Item.modality == modality)
        session.execute(delete(Vector).where(Vector.item_id.in_(items)))
        session.execute(update(Item).where(Item.status == OK, Item.id.in_(items))
                        .values(status=PENDING, error="waiting to be embedded"))
        self.bump_generation(session)


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
