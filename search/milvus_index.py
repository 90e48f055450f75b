"""A part of the vector index kept in Milvus (setting vector_store milvus:…): one collection per part, named
from its database's id and its space (``collection``: two databases on one server never share one, the
processes of one database do), of fields id (int64 primary key: the vector id, search.tables.vector_id), item_id (int64) and
vector (FLOAT_VECTOR), under an exact FLAT index with inner product, so its rankings are FAISS Flat's.

Like a FAISS file it is a checked cache of SQL (search.index_sync): its IndexState is kept as JSON in the
collection's own property ``mmsearch.state`` (beside its vectors, on a server too, and dropped with them).
Milvus stores every change as it is made; ``save`` flushes them and writes the state, so a crash before a
save leaves a state that under-claims and the next sync re-applies (``add`` upserts: idempotent).

One ``MilvusClient`` reaches milvus-lite (a local ``.db`` path, run embedded in this process; one process
at a time holds the file) or a Milvus server (``http://host:19530``). Filters are pushed down as boolean
expressions on item_id. One search asks for at most MAX_DEPTH vectors (Milvus's largest topk): past it, a
search for items goes on without the items found, and scores_above reads the best MAX_DEPTH vectors only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmsearch.errors import MMSearchError, first_line

from .index_types import IndexState
from .tables import item_of
from .vector_store import Hits, VectorSearch, VectorStore, best_per_item

FACTORY = "milvus FLAT"  # the layout's index type: exact inner product
STATE = "mmsearch.state"
MAX_DEPTH = 16_384  # a server refuses a larger topk (or query window); milvus-lite is held to it too
BATCH = 4_096  # rows an upsert or delete sends at once (a 512-d batch is 8 MB, under gRPC's 64 MB)


def require(uri: str) -> None:
    """The packages this URI needs are installed; else one line saying how to install them."""
    try:
        import pymilvus  # noqa: F401
        if uri.endswith(".db"):
            import milvus_lite  # noqa: F401 - pymilvus runs a .db path only with it
    except ImportError as exc:
        name = (exc.name or "pymilvus").replace("_", "-")
        raise MMSearchError(f"vector_store milvus needs {name}: pip install 'mmsearch[milvus]'") from None


def connect(uri: str) -> Any:
    """A MilvusClient for a milvus-lite file or a server; one clear error line when it cannot be had."""
    require(uri)
    from pymilvus import MilvusClient
    try:
        return MilvusClient(uri)
    except Exception as exc:  # noqa: BLE001 - pymilvus wraps a locked file or an unreachable server alike
        cause = exc.__cause__ or exc.__context__ or exc
        details = getattr(cause, "details", None)  # a gRPC error: its text, not its multi-line repr
        said = details() if callable(details) and details() else first_line(cause)
        raise MMSearchError(f"cannot open Milvus at {uri}: {first_line(said)}") from None


def milvus_uri(setting: str, folder: Path) -> str | None:
    """Setting vector_store's Milvus URI: a server's as given, a .db path made absolute (a relative one is
    inside the data dir ``folder``); None for faiss."""
    if not setting.startswith("milvus:"):
        return None
    uri = setting[len("milvus:"):]
    return uri if "://" in uri else str(folder / Path(uri).expanduser())


def collection(database: str, space: str) -> str:
    """The collection of one part: ``database`` is its SQL database's id (search.shared)."""
    return f"mmsearch_{database}_{space}"


class MilvusIndex(VectorStore):
    """One index part in a Milvus collection (see the module's docstring)."""

    max_depth = MAX_DEPTH

    def __init__(self, client: Any, state: IndexState, name: str):
        super().__init__(state)
        self.client = client
        self.name = name

    # --- the collection and its state ---------------------------------------------------------------
    @classmethod
    def create(cls, client: Any, state: IndexState, name: str) -> "MilvusIndex":
        """An empty collection ``name`` for this part, replacing any of that name (a rebuild)."""
        from pymilvus import DataType
        if client.has_collection(name):
            client.drop_collection(name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("item_id", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=state.dim)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        # Strong: a search right after an add or a remove sees it, as a FAISS index in memory does
        client.create_collection(name, schema=schema, consistency_level="Strong")
        # sync=False: an empty collection's FLAT index is there at once, and waiting polls every 0.5 s with
        # an RPC milvus-lite lacks (AllocTimestamp: logged as a server error on every create)
        client.create_index(name, index, sync=False)
        client.load_collection(name)
        return cls(client, state, name)

    @classmethod
    def load(cls, client: Any, space: str, name: str) -> "MilvusIndex | None":
        """The stored part with its state, or None when there is none or its state is missing or unreadable
        (a rebuild follows, as for a FAISS file: it is only a cache)."""
        from pymilvus.exceptions import MilvusException
        try:
            if not client.has_collection(name):
                return None
            described = client.describe_collection(name)
            state = IndexState(**json.loads(described.get("properties", {})[STATE]))
            dims = [f.get("params", {}).get("dim") for f in described["fields"] if f["name"] == "vector"]
            index = client.describe_index(name, "vector") or {}
            if state.space != space or [int(d) for d in dims if d] != [state.dim] or \
                    (index.get("index_type"), index.get("metric_type")) != ("FLAT", "IP"):
                return None
            client.load_collection(name)
        except (KeyError, ValueError, TypeError, MilvusException):
            return None
        return cls(client, state, name)

    @staticmethod
    def drop(client: Any, name: str) -> None:
        if client.has_collection(name):
            client.drop_collection(name)

    def save(self, path: Path | None = None) -> None:
        """Flush the changes into Milvus's segments (milvus-lite scans unflushed rows one by one), then write
        the state. ``path``: unused (a FAISS part's file); Milvus keeps the vectors itself."""
        self.client.flush(self.name)
        self.client.alter_collection_properties(self.name, properties={STATE: json.dumps(self.state.__dict__)})

    # --- contents ---------------------------------------------------------------------------------
    def _read_ids(self) -> np.ndarray:
        rows = self.client.query(self.name, filter="id >= 0", output_fields=["id"])
        return np.sort(np.array([row["id"] for row in rows], np.int64))

    @property
    def device(self) -> str:
        return "cpu"  # a FLAT index is scanned on the CPU (Milvus's GPU types are GPU_*)

    def memory_bytes(self) -> int:
        """Each vector's floats, its id and its item id, as Milvus holds them loaded (milvus-lite: in this
        process; a server: in its query nodes)."""
        return self.ntotal * (4 * self.state.dim + 16)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = np.asarray(ids, np.int64), np.ascontiguousarray(vectors, np.float32)
        items = item_of(ids)
        for start in range(0, len(ids), BATCH):
            self.client.upsert(self.name, [{"id": int(i), "item_id": int(t), "vector": v} for i, t, v in
                                           zip(ids[start:start + BATCH], items[start:start + BATCH],
                                               vectors[start:start + BATCH])])
        if len(ids):
            self._changed()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        for start in range(0, len(ids), BATCH):
            self.client.delete(self.name, ids=ids[start:start + BATCH].tolist())
        if len(ids):
            self._changed()

    def reconstruct(self, vector_id: int) -> np.ndarray:
        rows = self.client.get(self.name, ids=[int(vector_id)], output_fields=["vector"])
        if not rows:
            raise RuntimeError(f"vector {vector_id} is not in {self.name}")
        return np.asarray(rows[0]["vector"], np.float32)

    def vectors(self, items: Sequence[int]) -> dict[int, np.ndarray] | None:
        wanted = np.intersect1d(self.item_ids(), np.asarray(list(items), np.int64))
        rows: list[dict] = []
        for start in range(0, len(wanted), BATCH):
            rows += self.client.query(self.name, filter=f"item_id in {wanted[start:start + BATCH].tolist()}",
                                      output_fields=["id", "vector"])
        rows.sort(key=lambda row: row["id"])
        owners = item_of(np.array([row["id"] for row in rows], np.int64))
        matrix = np.array([row["vector"] for row in rows], np.float32).reshape(len(rows), self.state.dim)
        return {int(item): matrix[owners == item] for item in np.unique(owners)}

    # --- search -----------------------------------------------------------------------------------
    def _filter(self, allowed_items: np.ndarray | None) -> str | None:
        """The allowed items as a boolean expression Milvus evaluates inside the search: None when every
        item here is allowed, else the shorter of the two lists (the expression grows with it)."""
        if allowed_items is None:
            return None
        held = self.item_ids()
        inside = np.intersect1d(held, np.asarray(allowed_items, np.int64))
        if len(inside) == len(held):
            return None
        outside = np.setdiff1d(held, inside)
        return f"item_id in {inside.tolist()}" if len(inside) <= len(outside) else \
            f"item_id not in {outside.tolist()}"

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> Hits:
        """VectorStore.search; a row that found fewer than k items in max_depth vectors (the top items have very
        many vectors each) goes on with searches that leave the items found out, until it has k or none is left."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        hits = super().search(queries, k, allowed_ids)
        allowed = self.item_ids() if allowed_ids is None else np.intersect1d(self.item_ids(), allowed_ids)
        if len(self.vector_ids_of(allowed)) <= self.max_depth:
            return hits  # every allowed vector was within reach
        for row, query in enumerate(queries):
            while (have := int((hits[1][row] >= 0).sum())) < k:
                rest = np.setdiff1d(allowed, hits[1][row][:have])
                more = super().search(query, k - have, rest) if len(rest) else None
                found = 0 if more is None else int((more[1][0] >= 0).sum())
                if found == 0:
                    break
                for whole, part in zip(hits, more):  # the rest score no higher than every item found before
                    whole[row, have:have + found] = part[0, :found]
        return hits

    def _vector_search(self, allowed_items: np.ndarray | None, allowed: np.ndarray | None) -> VectorSearch:
        expr = self._filter(allowed_items)
        if expr is None and self.batcher is not None:
            return self.batcher
        return lambda queries, k: self._search(queries, k, expr)

    def plain_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._search(queries, k, None)

    def _search(self, queries: np.ndarray, k: int, expr: str | None, **params: float
                ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vector ids) per query row, padded with -inf and -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        k = max(1, min(int(k), self.max_depth))
        found = self.client.search(self.name, data=list(queries), limit=k, filter=expr or "", anns_field="vector",
                                   search_params={"metric_type": "IP", "params": params}, output_fields=[])
        scores, ids = np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        for row, hits in enumerate(found):
            scores[row, :len(hits)] = [hit["distance"] for hit in hits]
            ids[row, :len(hits)] = [hit["id"] for hit in hits]
        return scores, ids

    def scores_above(self, query: np.ndarray, floor: float, allowed_ids: np.ndarray | None = None) -> np.ndarray:
        """A range search (Milvus radius: scores above ``floor``), at most MAX_DEPTH vectors deep."""
        reachable = self.ntotal if allowed_ids is None else len(self.vector_ids_of(allowed_ids))
        if reachable == 0:
            return np.zeros(0, np.float32)
        scores, ids = self._search(query, min(reachable, self.max_depth), self._filter(allowed_ids),
                                   radius=float(floor))
        keep = (ids[0] >= 0) & (scores[0] > floor)
        return best_per_item(item_of(ids[0][keep]), scores[0][keep])[1]
