"""Timing helpers the benchmark scripts share."""
from __future__ import annotations

import os
import time
from typing import Any


class CallTimer:
    """Wraps ``owner.name`` so the seconds spent inside it add up in ``seconds``: the model's share of a
    pipeline that calls it; ``calls`` counts the calls."""

    def __init__(self, owner: Any, name: str):
        self.seconds = 0.0
        self.calls = 0
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            self.calls += 1
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - begun

        setattr(owner, name, timed)


class Stopwatch:
    """Wall time of a block, and how busy the other processes kept the CPUs meanwhile (in cores,
    from /proc/stat minus this process's own CPU time; None where /proc/stat is absent)."""

    def __enter__(self) -> "Stopwatch":
        self.started, self._busy, self._own = time.perf_counter(), _cpu_busy(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        busy, own = _cpu_busy(), time.process_time() - self._own
        self.others = None if busy is None else max(0.0, (busy - self._busy - own) / self.seconds)


def _cpu_busy() -> float | None:
    """Seconds all CPUs have spent busy since boot."""
    try:
        with open("/proc/stat") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is already in user
