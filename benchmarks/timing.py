"""A timing helper the benchmark scripts share."""
from __future__ import annotations

import time
from typing import Any


class CallTimer:
    """Wraps ``owner.name`` so the seconds spent inside it add up in ``seconds``: the model's share of a
    pipeline that calls it."""

    def __init__(self, owner: Any, name: str):
        self.seconds = 0.0
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - begun

        setattr(owner, name, timed)
