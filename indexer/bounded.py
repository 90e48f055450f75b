"""An ordered map over a thread pool that bounds what is in flight, by count and by an estimated cost."""
from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence


def bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: Sequence, window: int,
                 cost: Callable[[Any], int] = lambda _: 0, budget: int = 0) -> Iterator:
    """Like pool.map, in order, but with at most ``window`` items in flight and, when a ``cost`` is given,
    their costs summing to at most ``budget`` (one item always runs), so memory stays bounded."""
    pending: collections.deque[tuple[Future, int]] = collections.deque()
    iterator = iter(items)
    held = 0
    waiting = None  # an item taken from the iterator that did not fit yet

    def fill() -> None:
        nonlocal held, waiting
        while len(pending) < window:
            item = waiting if waiting is not None else next(iterator, None)
            waiting = None
            if item is None:
                return
            price = cost(item)
            if pending and held + price > budget:
                waiting = item
                return
            pending.append((pool.submit(fn, item), price))
            held += price

    fill()
    while pending:
        future, price = pending.popleft()
        result = future.result()
        held -= price
        fill()
        yield result
