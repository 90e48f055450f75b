#!/usr/bin/env python3
"""Slow clients against `mmsearch serve`: does /api/health still answer while half-open connections are held?

The samples are indexed with the ``tiny`` model into a temp data dir and served on 127.0.0.1 (a free port).
Then ``--held`` sockets each send part of a request line (``GET /api/hea``) and nothing more, and
``--probes`` fresh connections ask GET /api/health one after another (client timeout ``--timeout``).
Prints the health latency before and while the sockets are held (median and max, or "no answer"), and how
long after going idle the server closed the held sockets (``--channel-timeout``, the setting).
``--waitress-defaults`` serves with waitress's own defaults (connection_limit 100, channel_timeout 120)
to show the lock-out that those give.

    python3 benchmarks/slow_clients.py [--held 120] [--probes 10] [--channel-timeout 30] [--waitress-defaults]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # only ever the loopback


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def health(port: int, timeout: float) -> float | None:
    """Seconds for one GET /api/health on a new connection, or None when it got no answer in ``timeout``."""
    started = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while b'"ok"' not in data and time.perf_counter() - started < timeout:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    return time.perf_counter() - started if b" 200 " in data and b'"ok"' in data else None


def probe(port: int, count: int, timeout: float) -> str:
    times = [health(port, timeout) for _ in range(count)]
    answered = [t for t in times if t is not None]
    if not answered:
        return f"no answer in {timeout:.0f} s ({count} tries)"
    return (f"median {1000 * statistics.median(answered):.1f} ms, max {1000 * max(answered):.1f} ms, "
            f"{len(answered)}/{count} answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--held", type=int, default=120)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout of each health probe (s)")
    parser.add_argument("--channel-timeout", type=int, default=30)
    parser.add_argument("--waitress-defaults", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MMSEARCH_DATA_DIR": str(Path(tmp) / "data"), "MMSEARCH_MODEL": "tiny",
               "MMSEARCH_CHANNEL_TIMEOUT": str(args.channel_timeout)}
        if args.waitress_defaults:
            env.update(MMSEARCH_CONNECTION_LIMIT="100", MMSEARCH_CHANNEL_TIMEOUT="120")
        subprocess.run([sys.executable, "-m", "mmsearch", "index", str(ROOT / "samples")], env=env, check=True,
                       capture_output=True, timeout=600)
        port = free_port()
        log = open(Path(tmp) / "serve.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve", "--port", str(port)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while health(port, 2) is None:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("serve did not start: " + Path(log.name).read_text()[-2000:])
                time.sleep(0.3)
            print(f"serve on {HOST}:{port}, channel_timeout {env['MMSEARCH_CHANNEL_TIMEOUT']} s"
                  + (", connection_limit 100 (waitress defaults)" if args.waitress_defaults else ""))
            print(f"health, nothing held:        {probe(port, args.probes, args.timeout)}")
            held = []
            for _ in range(args.held):
                sock = socket.create_connection((HOST, port), timeout=5)
                sock.sendall(b"GET /api/hea")
                held.append(sock)
            idle_since = time.monotonic()
            print(f"health, {args.held} half-open held: {probe(port, args.probes, args.timeout)}")
            closed_after = []
            limit = idle_since + int(env["MMSEARCH_CHANNEL_TIMEOUT"]) + 60
            for sock in held:
                sock.settimeout(max(0.1, limit - time.monotonic()))
                try:
                    sock.recv(1)
                    closed_after.append(time.monotonic() - idle_since)
                except ConnectionResetError:
                    closed_after.append(time.monotonic() - idle_since)
                except OSError:
                    break
                finally:
                    sock.close()
            if len(closed_after) == len(held):
                print(f"held sockets closed by the server {min(closed_after):.1f}-{max(closed_after):.1f} s "
                      "after they went idle")
            else:
                print(f"{len(held) - len(closed_after)} held sockets still open after {limit - idle_since:.0f} s")
            print(f"health, after:               {probe(port, args.probes, args.timeout)}")
        finally:
            server.terminate()
            server.wait(10)
            log.close()


if __name__ == "__main__":
    main()
