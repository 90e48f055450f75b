"""search.batching.Batcher (issue #13): concurrent searches merged into one call of the wrapped search, each
caller getting exactly its own rows; different k never share a call; an error reaches every caller of its
batch and the batcher keeps working; a lone caller runs at once on its own thread (no window waited)."""
from __future__ import annotations

import threading
import time
from typing import Callable

import faiss
import numpy as np
import pytest

from mmsearch.search.batching import Batcher

JOIN_S = 60  # generous: a thread still alive after this is a hang (e.g. a caller waiting out a window)


def run_threads(jobs: list[Callable[[], object]]) -> list[object]:
    """Run each job on its own thread, started together; its return value, or the exception it raised."""
    out: list[object] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        start.wait()
        try:
            out[i] = jobs[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    return out


def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + JOIN_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def tagged(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A fake search whose answers name their query: row r's ids are tag * 1000 + 0..k-1 (tag: rows[r, 0])."""
    tags = rows[:, 0].astype(np.int64)
    return np.repeat(rows[:, :1], k, axis=1), tags[:, None] * 1000 + np.arange(k)


class Recorder:
    """Wraps a search: records (thread, rows, k) of every call, optionally sleeping to force overlap."""

    def __init__(self, search=tagged, sleep_s: float = 0.0) -> None:
        self.search, self.sleep_s, self.calls, self.lock = search, sleep_s, [], threading.Lock()

    def __call__(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            self.calls.append((threading.get_ident(), len(rows), k))
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self.search(rows, k)


def query(tag: int, n: int = 1, d: int = 8) -> np.ndarray:
    rows = np.zeros((n, d), np.float32)
    rows[:, 0] = tag + np.arange(n)
    return rows


def test_many_threads_get_exactly_the_unbatched_rows():
    rng = np.random.default_rng(13)
    base = rng.standard_normal((5000, 64)).astype(np.float32)
    index = faiss.IndexFlatIP(64)
    index.add(base)
    batcher, threads_before = Batcher(index.search), threading.active_count()
    queries = [[rng.standard_normal((int(rng.integers(1, 4)), 64)).astype(np.float32) for _ in range(20)]
               for _ in range(16)]
    got = run_threads([lambda mine=mine: [batcher(q, 10) for q in mine] for mine in queries])
    for mine, answers in zip(queries, got):
        assert not isinstance(answers, Exception), answers
        for q, (scores, ids) in zip(mine, answers):
            want_scores, want_ids = index.search(q, 10)
            assert ids.shape == scores.shape == (len(q), 10)
            np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-4)
            # Batched BLAS and single-row scans round differently: ids may only differ where scores tie.
            differ = ids != want_ids
            assert np.all(np.abs(scores - want_scores)[differ] < 1e-4) and differ.mean() < 0.01
    assert threading.active_count() == threads_before  # the batcher starts no threads
    assert batcher.waiting() == 0


def test_concurrent_callers_share_calls_and_each_gets_its_own_rows():
    search = Recorder(sleep_s=0.005)
    batcher = Batcher(search)
    calls = 10

    def caller(t: int) -> list[bool]:
        ok = []
        for c in range(calls):
            tag = (t * calls + c) * 10
            scores, ids = batcher(query(tag, n=2), 3)
            ok.append(ids.shape == (2, 3) and np.array_equal(ids[:, 0], [tag * 1000, (tag + 1) * 1000]))
        return ok

    got = run_threads([lambda t=t: caller(t) for t in range(8)])
    assert all(all(ok) for ok in got), got
    requests = 8 * calls
    assert sum(n for _, n, _ in search.calls) == 2 * requests
    assert len(search.calls) <= requests // 2, f"{len(search.calls)} calls for {requests} requests"


def test_different_k_and_dimensions_never_share_a_call():
    def strict(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = tagged(rows, k)
        assert scores.shape == ids.shape == (len(rows), k)
        return scores, ids

    search = Recorder(strict, sleep_s=0.002)
    batcher = Batcher(search)
    ks, dims = (1, 4, 9), (8, 16)

    def caller(t: int) -> list[bool]:
        ok = []
        for c in range(15):
            k, d, n, tag = ks[(t + c) % 3], dims[(t + c) % 2], 1 + (t + c) % 3, (t * 15 + c) * 10
            scores, ids = batcher(query(tag, n, d), k)
            ok.append(ids.shape == scores.shape == (n, k) and
                      np.array_equal(ids, (tag + np.arange(n))[:, None] * 1000 + np.arange(k)))
        return ok

    got = run_threads([lambda t=t: caller(t) for t in range(12)])
    assert all(isinstance(ok, list) and all(ok) for ok in got), got
    assert len(search.calls) < 12 * 15  # they did batch
    assert {k for _, _, k in search.calls} == set(ks)


def gated(fail_on: set[int]) -> tuple[Recorder, threading.Event, threading.Event]:
    """A recorder whose first call blocks until `gate` is set (so callers queue behind it), and whose
    calls numbered in fail_on (1-based) raise."""
    entered, gate = threading.Event(), threading.Event()
    recorder = Recorder()

    def search(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        number = len(recorder.calls)
        if number == 1:
            entered.set()
            assert gate.wait(JOIN_S)
        if number in fail_on:
            raise RuntimeError(f"boom {number}")
        return tagged(rows, k)

    recorder.search = search
    return recorder, entered, gate


def queue_behind_first(batcher: Batcher, entered: threading.Event, gate: threading.Event,
                       followers: int) -> list[object]:
    """First caller holds the lane inside the wrapped search; `followers` queue; then the gate opens."""
    first: list[object] = []

    def release() -> None:
        until(lambda: batcher.waiting() == followers)
        gate.set()

    holder = threading.Thread(target=lambda: first.append(batcher(query(0), 2)), daemon=True)
    holder.start()
    assert entered.wait(JOIN_S)
    queued = run_threads([lambda i=i: batcher(query(100 * (i + 1)), 2) for i in range(followers)] + [release])
    holder.join(JOIN_S)
    assert not holder.is_alive() and len(first) == 1
    return first + queued[:-1]


def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_recovers():
    search, entered, gate = gated(fail_on={2})
    batcher = Batcher(search)
    first, *followers = queue_behind_first(batcher, entered, gate, followers=5)
    assert not isinstance(first, Exception) and first[1][0, 0] == 0
    assert [n for _, n, _ in search.calls] == [1, 5]  # the five queued callers shared one call...
    assert all(isinstance(e, RuntimeError) and str(e) == "boom 2" for e in followers), followers  # ...and its error
    assert batcher.waiting() == 0
    scores, ids = batcher(query(7000), 2)  # still usable, and uncontended again: runs at once
    assert ids[0, 0] == 7000 * 1000 and search.calls[-1][1:] == (1, 2)
    again = run_threads([lambda i=i: batcher(query(8000 + 10 * i), 2) for i in range(4)])
    assert all(not isinstance(a, Exception) and a[1][0, 0] == (8000 + 10 * i) * 1000 for i, a in enumerate(again))


@pytest.mark.parametrize("window_s, followers, batches", [(3600.0, 4, [1, 4]), (0.0, 6, [1, 4, 2])])
def test_a_batch_holds_at_most_max_batch_rows_and_a_full_one_does_not_wait(window_s, followers, batches):
    """A full queue runs at once even with an hour-long window; a longer queue splits at max_batch."""
    search, entered, gate = gated(fail_on=set())
    batcher = Batcher(search, window_s=window_s, max_batch=4)
    got = queue_behind_first(batcher, entered, gate, followers)
    assert [a[1][0, 0] for a in got] == [100 * 1000 * i for i in range(followers + 1)]
    assert [n for _, n, _ in search.calls] == batches


def test_a_leader_waiting_for_company_runs_once_max_batch_rows_queue():
    """Two callers queue behind a running call; its end makes one of them leader, which (hour-long window)
    waits for more; the two that arrive then fill max_batch, and the four run at once in one call."""
    search, entered, gate = gated(fail_on=set())
    batcher = Batcher(search, window_s=3600.0, max_batch=4)
    early: list[object] = []
    threads = [threading.Thread(target=lambda: batcher(query(0), 2), daemon=True)]
    threads += [threading.Thread(target=lambda i=i: early.append(batcher(query(100 * i), 2)), daemon=True)
                for i in (1, 2)]
    threads[0].start()
    assert entered.wait(JOIN_S)
    for t in threads[1:]:
        t.start()
    until(lambda: batcher.waiting() == 2)
    gate.set()
    threads[0].join(JOIN_S)  # the first call is over: a queued caller now leads, and waits for company
    assert not threads[0].is_alive() and batcher.waiting() == 2
    late = run_threads([lambda i=i: batcher(query(100 * i), 2) for i in (3, 4)])
    for t in threads[1:]:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in threads)
    assert sorted(a[1][0, 0] for a in early + late) == [100_000 * i for i in range(1, 5)]
    assert [n for _, n, _ in search.calls] == [1, 4]


def test_a_lone_caller_runs_at_once_on_its_own_thread():
    """Sequential calls never wait for company: with an hour-long window each still makes exactly one
    search call with its one row, on the calling thread (waiting would hang past the join)."""
    search = Recorder()
    batcher = Batcher(search, window_s=3600.0)
    me = run_threads([lambda: (threading.get_ident(), [batcher(query(i), 3)[1][0, 0] for i in range(50)])])[0]
    assert not isinstance(me, Exception), me
    ident, firsts = me
    assert firsts == [i * 1000 for i in range(50)]
    assert search.calls == [(ident, 1, 3)] * 50


def test_rejects_rows_that_are_not_a_matrix():
    with pytest.raises(ValueError):
        Batcher(tagged)(np.zeros(8, np.float32), 3)
