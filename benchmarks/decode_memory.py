#!/usr/bin/env python3
"""Peak memory of decoding hostile images (issue 11), old code beside new, measured in one run.

Files (written in streams, never held decoded here):
  grey16       a 16-bit greyscale 10000x10000 PNG of ~219 KB
  line         a 100000x1 RGB PNG of a few hundred bytes
  near-budget  a 7000x7000 RGB PNG: the largest kind the default budget lets a query decode (reduced)

Cases, each in a child process of its own (model tiny, a fresh data dir), for every code checkout:
  query X      ``Library.embed_query("image", bytes)`` once
  8x query X   the same from 8 threads at once (the server's default thread count)
  index        ``Library.run_index`` of a folder of 8 distinct grey16 and 8 distinct line files with
               8 decode workers

The child imports, loads the model and embeds a small warm-up image first, then resets its peak RSS
(``/proc/self/clear_refs``); the figure is VmHWM after the case minus VmRSS before it. Each child's
address space is capped at ``--cap-gib`` above that, so the old code cannot take the machine down:
a case that hits the cap prints ">= cap" (MemoryError).

    python3 benchmarks/decode_memory.py [--old-rev HEAD | --old PATH] [--cap-gib 8]

``--old-rev REV`` checks REV out into a temporary git worktree (removed afterwards); ``--old PATH``
uses a checkout there (e.g. ``git worktree add /tmp/decode-old HEAD``). Old checkouts may still have
the top-level layout (``from indexer.decode import ...``): the child only uses mmsearch.settings and
mmsearch.library, found first on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("query grey16", "query line", "query near-budget", "8x query grey16", "8x query line",
         "8x query near-budget", "index")


# --- files ----------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, bit_depth: int, colour_type: int, row: bytes,
              note: str = "") -> None:
    """A PNG of ``height`` equal rows (filter 0 + ``row``), compressed as a stream."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b"\x00" + row) for _ in range(height)] + [packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    text = _chunk(b"tEXt", b"Comment\x00" + note.encode()) if note else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + text
                     + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))


def make_files(folder: Path) -> dict[str, Path]:
    files = {"grey16": folder / "grey16.png", "line": folder / "line.png", "near-budget": folder / "near.png"}
    write_png(files["grey16"], 10000, 10000, 16, 0, bytes(20000))
    write_png(files["line"], 100000, 1, 8, 2, bytes(300000))
    write_png(files["near-budget"], 7000, 7000, 8, 2, bytes([90, 140, 200]) * 7000)
    tree = folder / "tree"
    tree.mkdir()
    for i in range(8):  # distinct bytes, so the indexer decodes each instead of copying a vector
        write_png(tree / f"grey16-{i}.png", 10000, 10000, 16, 0, bytes(20000), note=str(i))
        write_png(tree / f"line-{i}.png", 100000, 1, 8, 2, bytes(300000), note=str(i))
    return files


# --- the child: one case, one process -------------------------------------------------------------

def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(case: str, files: dict[str, str], cap: int) -> dict:
    import io
    import resource
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from mmsearch.library import Library
    from mmsearch.settings import load_settings

    data_dir = tempfile.mkdtemp(prefix="decode-memory-")
    settings = load_settings({"data_dir": data_dir, "model": "tiny", "workers": 8, "batch_size": 8}, env={})
    library = Library(settings)
    warm = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 200, 30)).save(warm, "PNG")
    library.embed_query("image", warm.getvalue())
    import mmsearch.library as where
    resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") + cap, resource.RLIM_INFINITY))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    outcome = "ok"

    def query(name: str) -> str:
        try:
            library.embed_query("image", Path(files[name]).read_bytes())
            return "embedded"
        except MemoryError:
            return "MemoryError"
        except Exception as exc:  # a refusal (MMSearchError) is the expected outcome for hostile files
            return f"refused: {str(exc)[:70]}"
    try:
        if case == "index":
            report = library.run_index([files["tree"]])
            outcome = f"added {report.added}, failed {report.failed}"
            if any("MemoryError" in reason for _, reason in report.failures):
                outcome += " (MemoryError)"
        else:
            name = case.split()[-1]
            if case.startswith("8x"):
                with ThreadPoolExecutor(8) as pool:
                    outcomes = sorted(set(pool.map(query, [name] * 8)))
                outcome = " / ".join(outcomes)
            else:
                outcome = query(name)
    except MemoryError:
        outcome = "MemoryError"
    return {"increase": _status("VmHWM") - before, "outcome": outcome, "module": where.__file__}


# --- the parent ---------------------------------------------------------------------------------

def run_side(checkout: Path, case: str, files: dict[str, Path], cap: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    spec = json.dumps({k: str(v) for k, v in files.items()})
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", case, "--files", spec,
                           "--cap", str(cap)], cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"increase": None, "outcome": f"child failed: {done.stderr.strip().splitlines()[-1][:80]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="a checkout of the code before (e.g. a git worktree of HEAD)")
    parser.add_argument("--old-rev", help="check this revision out into a temporary worktree as the old side")
    parser.add_argument("--cap-gib", type=float, default=8.0, help="address-space cap of each child above its start")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.files), args.cap)))
        return
    cap = int(args.cap_gib * 2**30)
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as tmp:
        sides = {"new": ROOT}
        if args.old_rev:
            old = Path(tmp) / "old"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old_rev],
                           check=True, capture_output=True)
            sides = {"old": old, **sides}
        elif args.old:
            sides = {"old": Path(args.old).resolve(), **sides}
        files = make_files(Path(tmp))
        files["tree"] = Path(tmp) / "tree"
        print(f"files: grey16 {files['grey16'].stat().st_size} B, line {files['line'].stat().st_size} B, "
              f"near-budget {files['near-budget'].stat().st_size} B; cap {args.cap_gib:g} GiB a child")
        print(f"{'case':22} " + " ".join(f"{name + ' +MiB':>10} {name + ' outcome':<52}" for name in sides))
        try:
            for case in CASES:
                cells = []
                for name, checkout in sides.items():
                    result = run_side(checkout, case, files, cap)
                    mib = "-" if result["increase"] is None else f"{result['increase'] / 2**20:.0f}"
                    if "MemoryError" in result["outcome"]:
                        mib = f">={args.cap_gib * 1024:.0f}"
                    cells.append(f"{mib:>10} {result['outcome'][:52]:<52}")
                print(f"{case:22} " + " ".join(cells), flush=True)
        finally:
            if args.old_rev:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sides["old"])],
                               capture_output=True)
    print("targets (issue 11): each query < 512 MiB, 8 at once < 2048 MiB, indexing likewise")


if __name__ == "__main__":
    main()
