"""The query syntax of the CLI and the web search box.

    "sunset" + 0.5:./photo.jpg - "people"      2:cat      like:42      beach -crowd

Terms are joined by + or - (a leading - negates the next term); ``N:`` before a term multiplies its
weight. A term is a quoted phrase, ``like:ID``, a file path (only when files are allowed and it exists;
images and sounds by extension), or bare words, which run together into one text part.
"""
from __future__ import annotations

import os
import re
import shlex

from indexer.scan import modality_of
from mmsearch.errors import MMSearchError

from .request import QueryPart

_WEIGHT = re.compile(r"^([+-]?\d+(?:\.\d+)?):(.+)$", re.S)


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars="+")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as exc:
        raise MMSearchError(f"cannot parse query: {exc}") from None


def parse_query(text: str, allow_files: bool = False) -> list[QueryPart]:
    """Parts with signed weights. With ``allow_files`` False a path is searched as words, never read."""
    if not text or not text.strip():
        raise MMSearchError("the query is empty")
    parts: list[QueryPart] = []
    words: list[str] = []  # bare words with the same weight run together into one phrase
    words_weight = 1.0
    sign = 1.0
    for token in _tokens(text):
        if token == "+":
            sign = 1.0
            continue
        if token.startswith("-") and not _WEIGHT.match(token):
            sign = -1.0
            token = token[1:]
            if not token:
                continue
        weight, term = sign, token
        match = _WEIGHT.match(token)
        if match:
            weight, term = sign * float(match.group(1)), match.group(2)
        sign = 1.0
        part = _special(term, weight, allow_files)
        if part is None and (not words or weight == words_weight):
            words.append(term)
            words_weight = weight
            continue
        if words:
            parts.append(QueryPart("text", " ".join(words), words_weight))
            words = []
        if part is None:
            words, words_weight = [term], weight
        else:
            parts.append(part)
    if words:
        parts.append(QueryPart("text", " ".join(words), words_weight))
    if not parts:
        raise MMSearchError("the query is empty")
    return parts


def _special(term: str, weight: float, allow_files: bool) -> QueryPart | None:
    if term.startswith("like:"):
        value = term[5:]
        if not value.isdigit():
            raise MMSearchError(f"like: needs an item id, not {value!r}")
        return QueryPart("item", int(value), weight)
    if allow_files and os.path.isfile(os.path.expanduser(term)):
        modality = modality_of(term)
        if modality in ("image", "audio"):
            with open(os.path.expanduser(term), "rb") as handle:
                return QueryPart(modality, handle.read(), weight, os.path.basename(term))
    return None
