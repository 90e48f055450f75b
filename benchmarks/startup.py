#!/usr/bin/env python3
"""Wall time of a whole command line, start-up included, for this tree and an older release side by side.

Each tree indexes samples/ with the tiny model into its own fresh data dir (not timed), then runs
``stats``, a no-op ``index samples``, ``search "a red apple"`` and ``search --like 1`` as fresh processes,
taking turns with the other tree so both see the same machine load; the best of --runs is kept. The old release runs from
a git worktree as it was run then (``PYTHONPATH=TREE python3 TREE/manage.py``).

    python3 benchmarks/startup.py [--old f228a27] [--worktree /tmp/startup-old] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
COMMANDS = {"stats": ["stats"], "index (no-op)": ["index", str(SAMPLES)], "search text": ["search", "a red apple"],
            "search --like": ["search", "--like", "1"]}  # the last: a search that needs no model


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="f228a27", help="commit of the older release")
    parser.add_argument("--worktree", default="/tmp/startup-old", help="where that commit is checked out")
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args()


def checkout(commit: str, worktree: Path) -> None:
    if not (worktree / "manage.py").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), commit], check=True,
                       capture_output=True)


def runner(tree: str, worktree: Path, data_dir: Path):
    """A function running one command line of that tree against its data dir, returning wall seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMSEARCH_", "PYTHONPATH"))}
    env.update(MMSEARCH_DATA_DIR=str(data_dir), MMSEARCH_MODEL="tiny", HF_HUB_OFFLINE="1")
    if tree == "old":
        env["PYTHONPATH"] = str(worktree)
        prefix = [sys.executable, str(worktree / "manage.py")]
    else:
        prefix = [sys.executable, "-m", "mmsearch"]

    def run(args: list[str]) -> float:
        started = time.perf_counter()
        result = subprocess.run(prefix + args, env=env, cwd=data_dir.parent, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{tree} tree: {' '.join(args)} failed: {result.stderr.strip()[-400:]}")
        return seconds
    return run


def main() -> None:
    options = arguments()
    worktree = Path(options.worktree)
    checkout(options.old, worktree)
    with tempfile.TemporaryDirectory(prefix="mmsearch-startup-") as scratch:
        runs = {tree: runner(tree, worktree, Path(scratch) / tree / "data") for tree in ("old", "new")}
        for tree, run in runs.items():
            (Path(scratch) / tree).mkdir()
            print(f"{tree}: indexed samples in {run(['index', str(SAMPLES)]):.1f} s (not counted)", file=sys.stderr)
        seconds: dict[tuple[str, str], list[float]] = {}
        for name, args in COMMANDS.items():
            for _ in range(options.runs):
                for tree, run in runs.items():  # alternating: a burst of load elsewhere hits both trees
                    seconds.setdefault((tree, name), []).append(run(args))
    best = {key: min(values) for key, values in seconds.items()}
    print(f"wall seconds, best of {options.runs}; old = {options.old}, new = this tree; tiny model, samples/")
    print(f"{'command':<15} {'old':>7} {'new':>7} {'new/old':>8}")
    for name in COMMANDS:
        old, new = best["old", name], best["new", name]
        print(f"{name:<15} {old:>7.2f} {new:>7.2f} {new / old:>8.2f}")


if __name__ == "__main__":
    main()
