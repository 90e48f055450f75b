"""The query syntax of the CLI and the web search box.

    "sunset" + 0.5:./photo.jpg - "people"      2:cat      like:42      beach -crowd      vector:[0.1, -0.2, 0.3]

Terms are joined by + or - (a leading - negates the next term); ``N:`` before a term multiplies its
weight. A term is a quoted phrase, ``like:ID``, ``vector:[numbers, ...]`` (spaces and signs inside the
brackets are the vector's), ``vector:FILE`` (a .npy file holding one vector; only when files are
allowed), a file path (only when files are allowed: the CLI; an image or a sound; an unquoted term that
looks like a path, with a folder separator or an image or sound extension, must exist), or bare words,
which run together into one text part. Quoted, a ``vector:`` term is words.
"""
from __future__ import annotations

import os
import re
from typing import Iterator

import numpy as np

from mmsearch.modalities import MEDIA, modality_of
from mmsearch.errors import MMSearchError

from .request import MAX_VECTOR_DIMS, QueryPart

_WEIGHT = re.compile(r"^([+-]?\d+(?:\.\d+)?):(.+)$", re.S)
_VECTOR_OPEN = re.compile(r"^-?(?:[+-]?\d+(?:\.\d+)?:)?vector:$")  # a token that a [ turns into an inline vector
_CLOSING = re.compile(r"'(?=\s|\+|$)")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Shell-like words, each with whether any of it was quoted; ``+`` is a token of its own. Hand-made
    because shlex forgets the quotes, and a quoted term is words even when it looks like a path."""
    tokens: list[tuple[str, bool]] = []
    token, quoted, started, quote = "", False, False, ""
    read = 0

    def feed() -> Iterator[str]:
        nonlocal read
        for char in text:
            read += 1
            yield char
    chars = feed()
    for char in chars:
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                token += next(chars, "")
            else:
                token += char
        elif char == '"' or char == "'" and not started and _CLOSING.search(text, read):
            # an apostrophe quotes only from a term's start to a closing one that ends a term: don't, it's
            # and keeper's are words
            quote, quoted, started = char, True, True
        elif char == "\\":
            token, started = token + next(chars, ""), True
        elif char == "[" and not quoted and _VECTOR_OPEN.match(token):
            token += char
            for char in chars:  # up to the closing ], whitespace and + included
                token += char
                if char == "]":
                    break
            else:
                raise MMSearchError("cannot parse query: vector:[ has no closing ]")
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
        part = _special(term, weight, allow_files and not quoted, quoted)
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


def _special(term: str, weight: float, allow_files: bool, quoted: bool = False) -> QueryPart | None:
    if term.startswith("like:"):
        value = term[5:]
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            raise MMSearchError(f"like: needs an item id, not {value!r}")
        return QueryPart("item", int(value), weight)
    if term.startswith("vector:[") and not quoted:
        return QueryPart("vector", _inline(term[7:]), weight)
    if not allow_files:
        return None
    if term.startswith("vector:"):
        return QueryPart("vector", _vector_file(term[7:]), weight, os.path.basename(term[7:]) or "vector")
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


def _inline(text: str) -> tuple[float, ...]:
    """``[0.1, -2e-3, 4]``: numbers between commas (their count and values QueryPart checks)."""
    if not text.endswith("]"):
        raise MMSearchError(f"vector:{text[:40]}: the term must end at the vector's closing ]")
    pieces = [piece.strip() for piece in text[1:-1].split(",")]
    if pieces == [""]:
        raise MMSearchError("vector:[] has no numbers")
    if len(pieces) > MAX_VECTOR_DIMS:
        raise MMSearchError(f"a vector query part has 1 to {MAX_VECTOR_DIMS} numbers, not {len(pieces)}")
    wrong = next((piece for piece in pieces if not _NUMBER.fullmatch(piece)), None)
    if wrong is not None:
        raise MMSearchError(f"vector:[...] takes numbers between commas, not {wrong[:40]!r}" if wrong else
                            "vector:[...] takes numbers between commas, with none missing")
    return tuple(float(piece) for piece in pieces)


def _vector_file(name: str) -> np.ndarray:
    """One vector from a .npy file (numpy.save): a 1-d array, or one row, of real numbers. Its header is read
    first, so a large file is refused without reading it."""
    if not name:
        raise MMSearchError("vector: needs [numbers] or a .npy file, as in vector:[0.1,0.2] or vector:query.npy")
    path = os.path.expanduser(name)
    if not os.path.isfile(path):
        raise MMSearchError(f"no such file: {name} (vector: takes [numbers] or a .npy file; put the term in quotes "
                            "to search it as words)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise MMSearchError(f"cannot read query vector file {name}: {exc.strerror or exc}") from None
    except (ValueError, EOFError):
        raise MMSearchError(f"query vector file {name} is not a .npy file of numbers (numpy.save writes one)") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise MMSearchError(f"query vector file {name} is an .npz archive: save the one vector with numpy.save")
    if array.dtype.kind not in "iuf" or not (array.ndim == 1 or (array.ndim == 2 and array.shape[0] == 1)):
        raise MMSearchError(f"query vector file {name} must hold one vector of real numbers, not a "
                            f"{'×'.join(map(str, array.shape)) or 'scalar'} array of {array.dtype}")
    if not 1 <= array.size <= MAX_VECTOR_DIMS:
        raise MMSearchError(f"a vector query part has 1 to {MAX_VECTOR_DIMS} numbers, not {array.size}")
    return np.array(array, np.float64).reshape(-1)
