#!/usr/bin/env python3
"""The JSON API under load while another process indexes: ``--clients`` threads against ``manage.py serve``
(the ``mmsearch serve`` command) for at least ``--seconds``, while a separate ``index`` process adds
``--files`` new files.

The data dir is api_load.py's (the samples indexed with the ``tiny`` model plus ``--items`` synthetic items
inserted into SQL; ``--data-dir`` keeps it). Before the load starts, ``--files`` small files are written into
a fresh folder outside the data dir: pictures (PNG and JPEG, random shapes), notes (.txt) and sounds (short
WAV tones), each with distinct content. ``--index-after`` seconds into the load, ``manage.py index FOLDER``
starts in its own process (the one writer; the server re-syncs its FAISS cache when SQL's generation moves).
The load runs until ``--seconds`` have passed and the index run has been over for ``--tail`` seconds, never
past ``--max-seconds``. Every query text is new (GET /api/search?q=..&k=10); an error is any exception,
any status but 200, or a response with fewer than k results.

Prints: requests, requests/s, p50/p99/max latency for the whole run and for the requests that started while
the index run was going; errors by kind; the server's VmRSS at the start (after warm-up), at its peak
(VmHWM) and at the end; and whether the server, without a restart, finds the new items (a search with
``path_prefix`` = the new folder, per modality, against what the index run reported). Exits 1 on any error
or if new items are missing. Connects only to 127.0.0.1.

    python3 benchmarks/api_load_indexing.py [--items 100000] [--clients 16] [--seconds 120] [--files 1000]
"""
from __future__ import annotations

import collections
import http.client
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import ROOT, WORDS, free_port, get, load_arguments, prepare, query, start_server  # noqa: E402


def write_files(folder: Path, n: int, seed: int) -> dict[str, int]:
    """n small files, half pictures, 30 % notes, 20 % sounds, each one's content its own (per seed too: a
    kept data dir gets new files, not moves, on the next run)."""
    folder.mkdir(parents=True)
    counts: collections.Counter[str] = collections.Counter()
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        kind = "image" if i % 10 < 5 else "text" if i % 10 < 8 else "audio"
        counts[kind] += 1
        if kind == "image":
            image = Image.new("RGB", (96, 96), tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(image)
            for _ in range(3):
                x, y = rng.integers(0, 70, 2)
                draw.ellipse((int(x), int(y), int(x) + 26, int(y) + 26), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            image.save(folder / f"pic{i:04d}.{'png' if i % 2 else 'jpg'}")
        elif kind == "text":
            (folder / f"note{i:04d}.txt").write_text(" ".join(rng.choice(WORDS, 12)) + f" note {seed}-{i}\n")
        else:
            rate, freq = 16_000, 200 + 5 * i + seed % 97 / 10
            wave_data = (0.3 * np.sin(2 * np.pi * freq * np.arange(rate // 2) / rate) * 32767).astype("<i2")
            buffer = io.BytesIO()
            with wave.open(buffer, "wb") as out:
                out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
                out.writeframes(wave_data.tobytes())
            (folder / f"tone{i:04d}.wav").write_bytes(buffer.getvalue())
    return dict(counts)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) // 1024
    return out


def stats(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"requests": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    array = np.asarray(latencies)
    return {"requests": len(latencies), "p50_ms": round(float(np.percentile(array, 50)), 1),
            "p99_ms": round(float(np.percentile(array, 99)), 1), "max_ms": round(float(array.max()), 1)}


def new_items_found(port: int, folder: Path) -> dict[str, int]:
    """What the server finds under the new folder, per modality (k at most 1000, the API's cap)."""
    found = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for modality in ("image", "text", "audio"):
        connection.request("GET", "/api/search?" + urllib.parse.urlencode(
            {"q": "red round shapes", "k": 1000, "path_prefix": str(folder), "modality": modality}))
        response = connection.getresponse()
        body = json.loads(response.read())
        found[modality] = len(body["results"]) if response.status == 200 else -response.status
    connection.close()
    return found


def main() -> None:
    parser = load_arguments(__doc__, clients=16, seconds=120.0)
    parser.add_argument("--files", type=int, default=1000, help="new files the index run adds")
    parser.add_argument("--index-after", type=float, default=15.0, help="seconds into the load the index run starts")
    parser.add_argument("--tail", type=float, default=10.0, help="seconds of load after the index run ends")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="the load stops by then whatever happens")
    args = parser.parse_args()
    log, temporary, data_dir, library, build_seconds = prepare(args)
    files_dir = tempfile.TemporaryDirectory(prefix="mmsearch-new-")
    folder = Path(files_dir.name) / "new"
    items_before = library.store.counts()["items"]
    written = write_files(folder, args.files, items_before)
    log(f"{items_before} items; wrote {sum(written.values())} new files {written} to {folder}; starting the server ...")
    port = free_port()
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(data_dir), "MMSEARCH_MODEL": "tiny"}
    server = start_server(data_dir, port, args.threads)
    latencies: list[tuple[float, float]] = []  # (start, ms) per request
    errors: collections.Counter[str] = collections.Counter()
    lock, stop = threading.Lock(), threading.Event()
    index_run: dict = {}
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in range(10):  # warm-up: models, page cache
            get(connection, query(n, "warm"), args.k)
        connection.close()
        rss_start = memory(server.pid)
        rss_samples = [rss_start["VmRSS"]]

        def client(number: int) -> None:
            mine, bad = [], collections.Counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for n in range(10_000_000):
                if stop.is_set():
                    break
                started = time.monotonic()
                try:
                    status, body = get(conn, query(n, f"c{number}y"), args.k)
                    if status != 200:
                        bad[f"status {status}"] += 1
                    elif len(body["results"]) != args.k:
                        bad[f"{len(body['results'])} results, not {args.k}"] += 1
                except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                    bad[type(exc).__name__ + ": " + str(exc)[:120]] += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                mine.append((started, (time.monotonic() - started) * 1000))
            conn.close()
            with lock:
                latencies.extend(mine)
                errors.update(bad)

        def indexer() -> None:
            if stop.wait(args.index_after):
                return
            index_run["start"] = time.monotonic()
            try:
                done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "index", "--json", str(folder)],
                                      env=env, cwd=ROOT, capture_output=True, text=True,
                                      timeout=args.max_seconds)
                index_run["rc"], index_run["output"] = done.returncode, done.stdout.strip()[-2000:]
                index_run["stderr"] = done.stderr.strip()[-2000:]
            except subprocess.TimeoutExpired:
                index_run["rc"], index_run["output"] = "timeout", ""
            index_run["end"] = time.monotonic()

        log(f"load: {args.clients} clients for >= {args.seconds:.0f} s; the index run starts after {args.index_after:.0f} s ...")
        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        threads.append(threading.Thread(target=indexer))
        for thread in threads:
            thread.start()
        while time.monotonic() - began < args.max_seconds:
            time.sleep(0.5)
            rss_samples.append(memory(server.pid)["VmRSS"])
            over = "end" in index_run and time.monotonic() - index_run["end"] >= args.tail
            if time.monotonic() - began >= args.seconds and over:
                break
        stop.set()
        for thread in threads:
            thread.join(args.max_seconds)
        elapsed = time.monotonic() - began
        rss_end = memory(server.pid)
        found = new_items_found(port, folder) if index_run.get("rc") == 0 else {}
    finally:
        stop.set()
        server.terminate()
        server.wait(10)

    try:
        reported = json.loads(index_run.get("output") or "{}")
    except ValueError:
        reported = {"raw": index_run.get("output")}
    overlap = [ms for started, ms in latencies if index_run.get("start", math.inf) <= started <= index_run.get("end", -1)]
    document = {
        "items_before": items_before, "cpus": os.cpu_count(), "clients": args.clients, "server_threads": args.threads,
        "seconds": round(elapsed, 1), "k": args.k, "files_written": written,
        "whole": {**stats([ms for _, ms in latencies]), "requests_per_s": round(len(latencies) / elapsed, 1)},
        "during_index": {**stats(overlap), "requests_per_s": round(len(overlap) / max(1e-9, index_run.get("end", 0)
                                                                                    - index_run.get("start", 0)), 1)},
        "errors": sum(errors.values()), "error_kinds": dict(errors),
        "index_run": {"rc": index_run.get("rc"), "report": reported,
                      "started_s": round(index_run.get("start", math.nan) - began, 1),
                      "seconds": round(index_run.get("end", math.nan) - index_run.get("start", math.nan), 1)},
        "server_rss_mib": {"start": rss_start["VmRSS"], "peak_sampled": max(rss_samples),
                           "peak_hwm": rss_end["VmHWM"], "end": rss_end["VmRSS"],
                           "growth": rss_end["VmRSS"] - rss_start["VmRSS"]},
        "slow_over_1s": sum(ms > 1000 for _, ms in latencies),
        "slowest": [{"ms": round(ms), "at_s": round(started - began, 1)}
                    for started, ms in sorted(latencies, key=lambda r: -r[1])[:5]],
        "server_queue_warnings": server.queue_warnings, "server_log": list(server.stderr_lines)[-20:],
        "new_items_found": found, "new_items_visible": bool(found) and sum(found.values()) == reported.get("added"),
    }
    if args.json:
        print(json.dumps(document))
    else:
        whole, during, run, rss = document["whole"], document["during_index"], document["index_run"], document["server_rss_mib"]
        print(f"index: {items_before} items before, {document['cpus']} CPUs, server threads {args.threads}, "
              f"{args.clients} clients, {document['seconds']} s")
        print(f"whole run: {whole['requests']} requests, {whole['requests_per_s']} req/s, p50 {whole['p50_ms']} ms, "
              f"p99 {whole['p99_ms']} ms, max {whole['max_ms']} ms")
        print(f"during the index run ({run['seconds']} s from t={run['started_s']} s, rc {run['rc']}, {run['report']}): "
              f"{during['requests']} requests, {during['requests_per_s']} req/s, p50 {during['p50_ms']} ms, "
              f"p99 {during['p99_ms']} ms, max {during['max_ms']} ms")
        print(f"{document['slow_over_1s']} requests over 1 s; slowest (ms, started at s): "
              + ", ".join(f"{r['ms']} at {r['at_s']}" for r in document["slowest"]))
        print(f"errors: {document['errors']}" + "".join(f"\n  {n} x {kind}" for kind, n in errors.most_common()))
        print(f"server RSS: start {rss['start']} MiB, peak {rss['peak_hwm']} MiB (VmHWM; sampled {rss['peak_sampled']}), "
              f"end {rss['end']} MiB, growth {rss['growth']:+d} MiB")
        print(f"server log: {document['server_queue_warnings']} 'Task queue depth' warnings"
              + "".join(f"\n  {line.rstrip()}" for line in document["server_log"]))
        print(f"new items found by the server without restart: {found} of {reported.get('added')} added "
              f"-> {'yes' if document['new_items_visible'] else 'NO'}")
        if index_run.get("rc") != 0:
            print("index run stderr: " + str(index_run.get("stderr"))[-1000:])
    files_dir.cleanup()
    if temporary:
        temporary.cleanup()
    if document["errors"] or not document["new_items_visible"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
