"""The lexical half of hybrid search: a full-text index over each item's file name (split into words), path,
caption, text and tag labels, ranked by BM25 (SQLite FTS5) or ts_rank_cd (PostgreSQL full-text search).

The index is kept by the database in the transaction that writes the rows: on SQLite, triggers on items
feed the FTS5 table ``items_fts`` (external content: the words are stored once, in items); on PostgreSQL,
the generated column ``items.search_terms`` (a tsvector, GIN-indexed). Revision 0003 made both, 0004 added
the labels; neither is declared in the ORM (``not_in_orm``). ``Item.name_terms`` is set from ``Item.path`` by
the ORM itself; ``Item.tag_terms`` by search.tags, in the transaction that writes the tags.

Queries are words and "quoted phrases" (their words adjacent, in order), any of which may match: items
holding more of them, and rarer ones, rank higher. The user's text never reaches FTS5's query syntax or SQL:
only its words (runs of letters and digits) do, each as an FTS5 string or a bound parameter.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text as sql

FTS_TABLE = "items_fts"
FTS_COLUMNS = ("name_terms", "path", "caption", "text", "tag_terms")  # the FTS5 table's columns, in order
BM25_WEIGHTS = (4.0, 1.5, 3.0, 1.0, 3.0)  # per FTS_COLUMNS: a word of the name, caption or tags counts most
PG_COLUMN = "search_terms"  # items' generated tsvector (weights: name, caption and tags A, path B, text D)
PG_INDEX = "ix_items_search_terms"
PG_NORMALIZATION = 1  # ts_rank_cd: divided by 1 + log(document length), as BM25 discounts long texts
MAX_TERMS = 32  # of one query: the rest of a long paste is ignored
MAX_WORD = 64  # characters: a longer "word" (a hash, a pasted blob) is no word anyone types
MAX_PHRASE = 16  # words of one phrase (a longer one keeps its first words, still adjacent)

_WORD = re.compile(r"[^\W_]+")  # letters and digits: what both databases' tokenizers keep
_SEPARATOR = re.compile(r"[\\/]")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"'})


def name_terms(path: str | None) -> str | None:
    """A file's base name as words: split on anything but letters and digits, on camel case and between
    letters and digits, then the unsplit compounds ("MyHolidayPhoto_IMG1.JPEG" -> "My Holiday Photo IMG 1
    JPEG MyHolidayPhoto IMG1"), so a word of a name and the name's own spelling both match."""
    if path is None:
        return None
    words: list[str] = []
    compounds: list[str] = []
    for chunk in _WORD.findall(_SEPARATOR.split(path)[-1]):
        parts = _split_case(chunk)
        words += parts
        if len(parts) > 1:
            compounds.append(chunk)
    return " ".join(words + compounds) or None


def _split_case(chunk: str) -> list[str]:
    """"HTMLParser2x" -> HTML Parser 2 x; letters without case (CJK) split only from digits."""
    parts: list[str] = []
    start = 0
    for i in range(1, len(chunk)):
        before, here = chunk[i - 1], chunk[i]
        after = chunk[i + 1] if i + 1 < len(chunk) else ""
        if (before.isdigit() != here.isdigit() or before.islower() and here.isupper()
                or before.isupper() and here.isupper() and after.islower()):
            parts.append(chunk[start:i])
            start = i
    parts.append(chunk[start:])
    return parts


@dataclass(frozen=True)
class Term:
    """One word, or a quoted phrase of several (which match only adjacent and in order)."""

    words: tuple[str, ...]

    @property
    def phrase(self) -> bool:
        return len(self.words) > 1

    def __str__(self) -> str:
        return " ".join(self.words)


def parse(text: str | None) -> list[Term]:
    """Words and "quoted phrases", lower-cased, each once, at most MAX_TERMS; punctuation separates words and
    means nothing else (no operators, no column filters, no wildcards). A quote left open quotes nothing."""
    pieces = unicodedata.normalize("NFKC", text or "").translate(_QUOTES).split('"')
    terms: list[Term] = []
    for i, piece in enumerate(pieces):
        words = _WORD.findall(piece.lower())
        if i % 2 == 1 and i < len(pieces) - 1:  # quoted (a phrase with an overlong word matches nothing)
            found = [Term(tuple(words[:MAX_PHRASE]))] if words and max(map(len, words)) <= MAX_WORD else []
        else:
            found = [Term((word,)) for word in words if len(word) <= MAX_WORD]
        for term in found:
            if term not in terms:
                terms.append(term)
    return terms[:MAX_TERMS]


def fts5_query(terms: list[Term]) -> str:
    """An FTS5 MATCH expression: each term an FTS5 string (a phrase when it has several words), joined by OR."""
    return " OR ".join('"' + str(term).replace('"', '""') + '"' for term in terms)


def pg_tsquery(terms: list[Term]) -> tuple[str, dict[str, str]]:
    """A tsquery expression over bound parameters: each term as 'simple' words (names and paths are indexed
    so, and made-up words keep their spelling) or 'english' ones (captions and text are stemmed), ORed."""
    parts, params = [], {}
    for i, term in enumerate(terms):
        build = "phraseto_tsquery" if term.phrase else "plainto_tsquery"
        params[f"term{i}"] = str(term)
        parts.append(f"{build}('simple', :term{i}) || {build}('english', :term{i})")
    return " || ".join(parts), params


def search(session: Any, dialect_name: str, text: str | None, limit: int,
           allowed_ids: np.ndarray | None = None) -> list[tuple[int, float]]:
    """(item id, score) of the ok items matching ``text``, best first (higher scores are better: -bm25 on
    SQLite, ts_rank_cd on PostgreSQL; the two scales differ). ``allowed_ids`` (a filter's ids) restricts the
    result; it travels as one parameter (a JSON array on SQLite, an array on PostgreSQL), never one per id, and
    is applied in the database, so a selective filter never empties a page that deeper matches would fill."""
    from .tables import OK
    terms = parse(text)
    if not terms or limit <= 0 or allowed_ids is not None and len(allowed_ids) == 0:
        return []
    params: dict[str, Any] = {"ok": OK, "limit": int(limit)}
    ids = None if allowed_ids is None else np.unique(np.asarray(allowed_ids, dtype=np.int64))
    if dialect_name == "sqlite":
        params["query"] = fts5_query(terms)
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        where = ""
        if ids is not None:  # unary + keeps FTS5 from being probed once per allowed id
            params["allowed"] = "[" + ",".join(map(str, ids.tolist())) + "]"
            where = f"AND +{FTS_TABLE}.rowid IN (SELECT value FROM json_each(:allowed))"
        query = (f"SELECT {FTS_TABLE}.rowid, -bm25({FTS_TABLE}, {weights}) AS score FROM {FTS_TABLE} "
                 f"JOIN items ON items.id = {FTS_TABLE}.rowid "
                 f"WHERE {FTS_TABLE} MATCH :query AND items.status = :ok {where} "
                 f"ORDER BY score DESC, {FTS_TABLE}.rowid LIMIT :limit")
    elif dialect_name == "postgresql":
        tsquery, terms_params = pg_tsquery(terms)
        params.update(terms_params)
        join = ""
        if ids is not None:  # a join the planner may hash: with = ANY(array) it probed the primary key once
            # per allowed id instead of reading the GIN index (110 ms against 28 ms for 50k of 100k ids)
            params["allowed"] = ids.tolist()
            join = "JOIN unnest(CAST(:allowed AS BIGINT[])) AS allowed (id) ON allowed.id = items.id"
        query = (f"SELECT items.id, ts_rank_cd(items.{PG_COLUMN}, q.q, {PG_NORMALIZATION}) AS score "
                 f"FROM items {join}, (SELECT {tsquery} AS q) AS q "
                 f"WHERE items.{PG_COLUMN} @@ q.q AND items.status = :ok "
                 f"ORDER BY score DESC, items.id LIMIT :limit")
    else:
        raise ValueError(f"no full-text search on {dialect_name}")
    return [(int(i), float(score)) for i, score in session.execute(sql(query), params)]


def problems(session: Any, dialect_name: str) -> list[str]:
    """Whether the full-text index agrees with the items (SQLite's FTS5 integrity check; PostgreSQL's index
    is a generated column, which cannot disagree)."""
    if dialect_name != "sqlite":
        return []
    try:
        with session.begin_nested():
            session.execute(sql(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)"))
    except Exception:  # sqlite3 says "database disk image is malformed" for an index out of step
        return ["the full-text index disagrees with the items: run 'mmsearch verify --repair'"]
    return []


def rebuild(session: Any, dialect_name: str) -> None:
    """Make the full-text index again from the items (SQLite); nothing to do on PostgreSQL."""
    if dialect_name == "sqlite":
        session.execute(sql(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')"))


# --- the schema: what revisions 0003 and 0004 made that the ORM does not declare -------------------------------
def not_in_orm(name: str | None, type_: str, parent_names: dict) -> bool:
    """Alembic's include_name hook, negated: the full-text index's own objects, which the database keeps
    (FTS5 table and its shadow tables, the tsvector column and its index), are left out of comparisons of the
    database with the ORM."""
    if type_ == "table":
        return name == FTS_TABLE or (name or "").startswith(FTS_TABLE + "_")
    if type_ == "column":
        return parent_names.get("table_name") == "items" and name == PG_COLUMN
    return type_ == "index" and name == PG_INDEX


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    return not not_in_orm(name, type_, parent_names)
