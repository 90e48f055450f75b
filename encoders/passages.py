"""Splitting a long text into passages that each fit the text tower's context, so every part of a note is
embedded, not only its opening (the tower reads 77 tokens, ~55 words, and drops the rest).

Passages are made of whole sentences where they fit (a sentence or paragraph is the unit a reader quotes
and a query most often repeats), packed up to the tower's budget, each window starting with the previous
window's last sentence when that is short (the overlap: a thought cut at a boundary is whole in one). A
sentence longer than the budget is cut into windows of whole words that step forward by ``1 - overlap`` of
a window, the last ending with the sentence. The CLIP tokenizer never joins tokens across whitespace, so a
window's token count is the sum of its words' counts. Each passage is a character range of the text."""
from __future__ import annotations

import re
from typing import Callable

WORD = re.compile(r"\S+")
SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*$")
OVERLAP = 0.25  # of a window's tokens that may be shared with the previous window


def spans(text: str, count: Callable[[str], int], budget: int, overlap: float = OVERLAP) -> list[tuple[int, int]]:
    """Character ranges of the passages of ``text`` for a tower that reads ``budget`` tokens; [] when the
    whole text fits (its content vector already reads all of it)."""
    known: dict[str, int] = {}
    words = []  # (start, end, tokens)
    for match in WORD.finditer(text):
        word = match.group()
        if word not in known:
            known[word] = max(1, count(word))
        words.append((match.start(), match.end(), known[word]))
    if sum(cost for _, _, cost in words) <= budget:
        return []
    out: list[tuple[int, int]] = []
    window: list[list[tuple[int, int, int]]] = []  # the sentences packed so far
    for sentence in _sentences(text, words):
        cost = sum(c for _, _, c in sentence)
        if cost > budget:  # too long for any window: cut by words
            _flush(window, out)
            window = []
            out.extend(_word_windows(sentence, budget, overlap))
            continue
        if window and sum(c for s in window for _, _, c in s) + cost > budget:
            last = window[-1]
            _flush(window, out)
            short = sum(c for _, _, c in last) + cost <= budget and sum(c for _, _, c in last) <= overlap * budget
            window = [last] if short else []
        window.append(sentence)
    _flush(window, out)
    return out


def _sentences(text: str, words: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Words grouped into sentences: a word ending in . ! ? … closes one, and so does a blank line after it."""
    out: list[list[tuple[int, int, int]]] = [[]]
    for n, (start, end, cost) in enumerate(words):
        out[-1].append((start, end, cost))
        following = text[end:words[n + 1][0]] if n + 1 < len(words) else ""
        if SENTENCE_END.search(text[start:end]) or following.count("\n") >= 2:
            out.append([])
    return [sentence for sentence in out if sentence]


def _flush(window: list[list[tuple[int, int, int]]], out: list[tuple[int, int]]) -> None:
    if window:
        out.append((window[0][0][0], window[-1][-1][1]))


def _word_windows(words: list[tuple[int, int, int]], budget: int, overlap: float) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    first = 0
    while True:
        last, used = first, 0
        while last < len(words) and (used + words[last][2] <= budget or last == first):
            used += words[last][2]
            last += 1
        if last == len(words):  # the final window: as full as the budget allows, ending with the sentence
            while first > 0 and used + words[first - 1][2] <= budget:
                first -= 1
                used += words[first][2]
            out.append((words[first][0], words[-1][1]))
            return out
        out.append((words[first][0], words[last - 1][1]))
        keep, back = 0, last  # step back over the overlap's worth of tokens
        while back - 1 > first and keep + words[back - 1][2] <= overlap * budget:
            back -= 1
            keep += words[back][2]
        first = back
