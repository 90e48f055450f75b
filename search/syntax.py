"""The query syntax of the CLI and the web search box.

    "sunset" + 0.5:./photo.jpg - "people"      2:cat      like:42      beach -crowd

Terms are joined by + or - (a leading - negates the next term); ``N:`` before a term multiplies its
weight. A term is a quoted phrase, ``like:ID``, a file path (only when files are allowed: the CLI; an
image or a sound; an unquoted term that looks like a path, with a folder separator or an image or sound
extension, must exist), or bare words, which run together into one text part.
"""
from __future__ import annotations

import os
import re

from mmsearch.modalities import MEDIA, modality_of
from mmsearch.errors import MMSearchError

from .request import QueryPart

_WEIGHT = re.compile(r"^([+-]?\d+(?:\.\d+)?):(.+)$", re.S)


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Shell-like words, each with whether any of it was quoted; ``+`` is a token of its own. Hand-made
    because shlex forgets the quotes, and a quoted term is words even when it looks like a path."""
    tokens: list[tuple[str, bool]] = []
    token, quoted, started, quote = "", False, False, ""
    chars = iter(text)
    for char in chars:
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                token += next(chars, "")
            else:
                token += char
        elif char in "'\"":
            quote, quoted, started = char, True, True
        elif char == "\\":
            token, started = token + next(chars, ""), True
        elif char.isspace() or char == "+":
            if started:
                tokens.append((token, quoted))
            token, quoted, started = "", False, False
            if char == "+":
                tokens.append(("+", False))
        else:
            token, started = token + char, True
    if quote:
        raise MMSearchError("cannot parse query: No closing quotation")
    if started:
        tokens.append((token, quoted))
    return tokens


def parse_query(text: str, allow_files: bool = False) -> list[QueryPart]:
    """Parts with signed weights. With ``allow_files`` False a path is searched as words, never read."""
    if not text or not text.strip():
        raise MMSearchError("the query is empty")
    parts: list[QueryPart] = []
    words: list[str] = []  # bare words with the same weight run together into one phrase
    typed: list[str] = []  # the same, quoted terms in quotes: what a hybrid search looks up
    words_weight = 1.0
    sign = 1.0
    for token, quoted in _tokens(text):
        if token == "+" and not quoted:
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
        part = _special(term, weight, allow_files and not quoted)
        as_typed = f'"{term}"' if quoted else term
        if part is None and (not words or weight == words_weight):
            words.append(term)
            typed.append(as_typed)
            words_weight = weight
            continue
        if words:
            parts.append(QueryPart("text", " ".join(words), words_weight, words=" ".join(typed)))
            words, typed = [], []
        if part is None:
            words, typed, words_weight = [term], [as_typed], weight
        else:
            parts.append(part)
    if words:
        parts.append(QueryPart("text", " ".join(words), words_weight, words=" ".join(typed)))
    if not parts:
        raise MMSearchError("the query is empty")
    return parts


def _special(term: str, weight: float, allow_files: bool) -> QueryPart | None:
    if term.startswith("like:"):
        value = term[5:]
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            raise MMSearchError(f"like: needs an item id, not {value!r}")
        return QueryPart("item", int(value), weight)
    if not allow_files:
        return None
    path = os.path.expanduser(term)
    modality = modality_of(term)
    if os.path.isfile(path):
        if modality not in MEDIA:
            raise MMSearchError(f"query file {term} is not an image or a sound; quote it to search its name as words")
        try:
            with open(path, "rb") as handle:
                return QueryPart(modality, handle.read(), weight, os.path.basename(term))
        except OSError as exc:
            raise MMSearchError(f"cannot read query file {term}: {exc.strerror or exc}") from None
    if os.sep in term or (os.altsep and os.altsep in term) or modality in MEDIA:
        raise MMSearchError(f"no such file: {term} (to search these as words, put them in quotes)")
    return None
