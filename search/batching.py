"""Merge concurrent vector searches into one call of the wrapped search (issue #13).

The web server answers each request on its own thread; one FAISS call per request wastes the index's
batch path (BLAS over many rows, one pass over the vectors for all of them). `Batcher` combines callers
without a timer ("flat combining"): a caller that finds no call in flight for its k runs at once on its
own thread, so a lone query pays nothing; callers that arrive while a call is running queue up, and
when it ends the first of them becomes the next leader and runs ONE call for the whole queue. Batch
size thus follows load by itself. No threads are started, and every wait blocks on an Event or a
Condition (no polling).
"""
from __future__ import annotations

import threading
from typing import Callable

import numpy as np

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class _Request:
    """One caller's rows, and where its leader leaves its answer (or the error) before waking it."""
    __slots__ = ("rows", "event", "lead", "scores", "ids", "error")

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.event = threading.Event()  # set once: answer ready, or "you lead the next batch"
        self.lead = False
        self.scores: np.ndarray | None = None
        self.ids: np.ndarray | None = None
        self.error: BaseException | None = None

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.error is not None:
            raise self.error
        assert self.scores is not None and self.ids is not None
        return self.scores, self.ids


class _Lane:
    """Callers of one (k, dim) while a call for it is in flight; a lane exists exactly while one is."""
    __slots__ = ("pending", "rows")

    def __init__(self) -> None:
        self.pending: list[_Request] = []  # FIFO, so no caller is overtaken indefinitely
        self.rows = 0


class Batcher:
    """Thread-safe wrapper of `search(queries (n, d) float32, k) -> (scores, ids)`, each (n, k), that
    merges callers with the same k (and dimension) into one call and hands each caller its own rows.

    window_s: once the lane is busy (a queue formed while a call ran), the next leader may wait up to
    this long for more callers, stopping early at max_batch rows; 0 runs the queue as it is. A caller
    that finds nothing in flight never waits. max_batch: the most rows per call (a larger single
    request still runs, alone).
    """

    def __init__(self, search: Search, window_s: float = 0.002, max_batch: int = 64) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError("window_s must be >= 0 and max_batch >= 1")
        self.search, self.window_s, self.max_batch = search, float(window_s), int(max_batch)
        self._cond = threading.Condition()  # guards _lanes; busy leaders wait on it for their batch to fill
        self._lanes: dict[tuple[int, int], _Lane] = {}

    def waiting(self) -> int:
        """Callers queued behind a running call (for health pages and tests)."""
        with self._cond:
            return sum(len(lane.pending) for lane in self._lanes.values())

    def __call__(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.ascontiguousarray(query_rows, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"query_rows must be (n, d), got shape {rows.shape}")
        # Rows of another dimension cannot be stacked with these: their own lane keeps one bad request
        # from failing its neighbours.
        key, req = (int(k), rows.shape[1]), _Request(rows)
        with self._cond:
            lane = self._lanes.get(key)
            queued = lane is not None
            if lane is None:  # nothing in flight for this k: run now, on this thread
                lane = self._lanes[key] = _Lane()
            else:
                lane.pending.append(req)
                lane.rows += len(rows)
                if lane.rows >= self.max_batch:
                    self._cond.notify_all()  # a leader filling its batch need wait no longer
        if queued:
            req.event.wait()
            if not req.lead:  # another leader served us
                return req.result()
        self._lead(key, lane, req, promoted=queued)
        return req.result()

    def _take(self, lane: _Lane) -> list[_Request]:
        """The next batch from the front of the queue (whose first request is the caller's own)."""
        with self._cond:
            if self.window_s > 0 and lane.rows < self.max_batch:
                self._cond.wait_for(lambda: lane.rows >= self.max_batch, timeout=self.window_s)
            batch, total = [], 0
            for r in lane.pending:
                if batch and total + len(r.rows) > self.max_batch:
                    break
                batch.append(r)
                total += len(r.rows)
            del lane.pending[:len(batch)]
            lane.rows -= total
            return batch

    def _lead(self, key: tuple[int, int], lane: _Lane, req: _Request, promoted: bool) -> None:
        """Run one call for req's batch, answer everyone in it, then hand the lane on (always)."""
        batch = [req]
        taken = not promoted
        try:
            if promoted:
                batch, taken = self._take(lane), True
            n = [len(r.rows) for r in batch]
            # A lone request goes through as the caller's own array: exactly the unbatched call.
            stacked = batch[0].rows if len(batch) == 1 else np.concatenate([r.rows for r in batch])
            scores, ids = self.search(stacked, key[0])
            if len(scores) != sum(n) or len(ids) != sum(n):
                raise RuntimeError(f"search returned {len(scores)}/{len(ids)} rows for {sum(n)} queries")
            start = 0
            for r, count in zip(batch, n):
                r.scores, r.ids = scores[start:start + count], ids[start:start + count]
                start += count
        except BaseException as exc:  # every caller of the batch sees the failure, in its own thread
            for r in batch:
                r.error = exc
        finally:
            with self._cond:
                if not taken:  # interrupted while filling: still first in the queue, leave it
                    lane.pending.remove(req)
                    lane.rows -= len(req.rows)
                if lane.pending:  # the queue's head leads next, taking all that queued meanwhile
                    lane.pending[0].lead = True
                    lane.pending[0].event.set()
                else:
                    del self._lanes[key]
            for r in batch:
                if r is not req:
                    r.event.set()
