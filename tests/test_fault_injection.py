"""Fault injection: `mmsearch index` killed at many points over a collection that changes between runs.

Each round changes the collection (files added, removed, renamed, copied, edited in place, a caption sidecar
edited, added or deleted, a broken file added or mended), kills `index` with SIGKILL or SIGINT at one point,
resumes, and checks: every file on disk has exactly one ok or failed row (none lost), no file a second row
(none duplicated), no vector without its item, on a failed or pending item, or a caption vector without a
caption, no file a killed write left (none orphaned), and `verify` exits 0.

Kill points, in turn: once the database has grown by 1-3 batches (mid-batch); right after planning; a few
ms into a batch's COMMIT; during the index save at the end (between an index file and its sidecar, or with a
file written but not moved in place); a random delay after start; after a batch is embedded, before it is
written; inside a batch's transaction before COMMIT. The first and fifth kill a plain `python -m mmsearch
index` from outside; the others run it under HOOK, a wrapper that installs one hook.

How many kills: --faults N or MMSEARCH_FAULTS=N (default 5); the seed: MMSEARCH_FAULT_SEED (printed).
"""
from __future__ import annotations

import collections
import fcntl
import importlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.modalities import captions, modality_of

from .conftest import ROOT
from .media import picture, tone_wav

SEED = 20240611
KINDS = ("rows", "plan", "commit", "save", "delay", "embed", "batch")
SIGNALS = (signal.SIGKILL, signal.SIGINT)
HOOK = r'''
import os, runpy, signal, sys, threading, time
from contextlib import contextmanager
where, nth, name, extra = os.environ.pop("MMSEARCH_TEST_FAULT").split(":")
nth, sig, extra, calls = int(nth), getattr(signal, name), float(extra), [0]

def due():  # the nth call of the hooked function
    calls[0] += 1
    return calls[0] == nth

def die():
    os.kill(os.getpid(), sig)
    time.sleep(60)  # SIGINT: the KeyboardInterrupt is raised in here

import mmsearch.indexer.pipeline as pipeline, mmsearch.search.store as store, mmsearch.search.vector_index as vi
if where == "plan":
    real_plan = pipeline.plan
    pipeline.plan = lambda *a, **k: (real_plan(*a, **k), die())
elif where == "embed":
    real_embed = pipeline.Indexer._embed
    def _embed(self, batch):
        out = real_embed(self, batch)
        if due():
            die()
        return out
    pipeline.Indexer._embed = _embed
elif where in ("batch", "commit"):
    real_batch = store.Store.batch
    @contextmanager
    def batch(self):
        with real_batch(self) as writes:
            yield writes
            if due() and where == "batch":
                writes.session.flush()
                die()
            elif calls[0] == nth:  # the kill lands a few ms later: in the COMMIT, or just after it
                threading.Timer(extra, os.kill, (os.getpid(), sig)).start()
    store.Store.batch = batch
elif where == "save":
    real_write = vi.atomic_write
    def _atomic_write(path, write):
        if not due():
            return real_write(path, write)
        if extra:
            die()  # the files before this one are in place, this one is not
        return real_write(path, lambda tmp: (write(tmp), die()))  # written, not yet moved in place
    vi.atomic_write = _atomic_write
sys.argv[0] = "mmsearch"
runpy.run_module("mmsearch", run_name="__main__", alter_sys=True)
'''


class Collection:
    """The media folder, changed at random, and what a correct index of it holds."""

    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng, self.seed = root, rng, 0
        self.broken: set[str] = set()  # relative paths of files that must end up failed
        (root / "sub").mkdir(parents=True)
        for _ in range(24):
            self.add_picture()
        for i in range(6):
            (root / f"note-{i}.md").write_text(f"note {i} about the garden and the number {i * 7}")
        for name in self.pictures()[:5]:
            self.write_caption(name)
        tone_wav(root / "beep.wav")
        for _ in range(2):
            self.add_broken()

    def pictures(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if modality_of(p.name) == "image" and str(p.relative_to(self.root)) not in self.broken)

    def add_picture(self, name: str | None = None) -> None:
        self.seed += 1
        name = name or f"{self.rng.choice(['', 'sub/'])}p{self.seed:03d}.{self.rng.choice(['png', 'jpg'])}"
        picture(self.seed, (48, 40)).save(self.root / name)

    def add_broken(self) -> None:
        self.seed += 1
        name = f"broken-{self.seed}.{self.rng.choice(['png', 'jpg'])}"
        (self.root / name).write_bytes(b"not a picture " * self.rng.randint(0, 20))
        self.broken.add(name)

    def write_caption(self, name: str) -> None:
        self.seed += 1
        sidecar = (self.root / name).with_suffix(".txt")
        sidecar.write_text(f"caption {self.seed}: a {self.rng.choice(['red', 'blue', 'green'])} picture")
        bump(sidecar)

    def change(self) -> None:
        rng = self.rng
        gone, gone2, old, edited, source = (self.root / n for n in rng.sample(self.pictures(), 5))
        shutil.copyfile(source, self.root / f"copy-{self.seed}{source.suffix}")  # same content: a copy
        for path in (gone, gone2):  # removed, with their caption
            path.unlink()
            path.with_suffix(".txt").unlink(missing_ok=True)
        new = self.root / f"{rng.choice(['', 'sub/'])}moved-{self.seed}{old.suffix}"
        os.rename(old, new)  # renamed, its caption along with it or left behind
        if old.with_suffix(".txt").exists() and rng.random() < 0.5:
            os.rename(old.with_suffix(".txt"), new.with_suffix(".txt"))
        self.seed += 1
        picture(self.seed, (40, 48)).save(edited, "PNG" if edited.suffix == ".png" else "JPEG")  # new content
        bump(edited)
        for _ in range(rng.randint(6, 9)):
            self.add_picture()
        captioned = [n for n in self.pictures() if (self.root / n).with_suffix(".txt").exists()]
        if captioned and rng.random() < 0.3:
            (self.root / rng.choice(captioned)).with_suffix(".txt").unlink()
        self.write_caption(rng.choice(captioned or self.pictures()))  # edited (or new)
        self.write_caption(rng.choice(self.pictures()))
        self.add_broken()
        if rng.random() < 0.5:  # a broken file mended
            mended = sorted(self.broken)[0]
            self.broken.discard(mended)
            self.add_picture(mended)
            bump(self.root / mended)
        note = self.root / f"note-{rng.randint(0, 9)}.md"
        note.write_text(f"note edited in round seed {self.seed}")
        bump(note)

    def expected(self) -> dict[str, tuple[str, str | None]]:
        """Absolute path -> (status, caption) for every file a correct index holds."""
        out = {}
        for folder, dirs, names in os.walk(self.root):
            sidecars = captions(names)
            for name in names:
                path = os.path.join(folder, name)
                if modality_of(name) is None or name in sidecars.values():
                    continue
                caption = Path(folder, sidecars[name]).read_text().strip() if name in sidecars else None
                out[path] = ("failed" if os.path.relpath(path, self.root) in self.broken else "ok", caption)
        return out


def bump(path: Path) -> None:
    """A new mtime even when the clock has not moved on since the last write."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_007))


def generation(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(json.loads(row[0])) if row else 0
    except sqlite3.Error:
        return 0


def kill_index(kind: str, sig: signal.Signals, rng: random.Random, media: Path, env: dict, db: Path,
               change: Callable[[], None]) -> str:
    """Start `mmsearch index`, kill it at a point of this kind; what happened, in words. ``change`` changes the
    collection again, for a run that ended before its delay."""
    args = ["index", str(media), "--json"]
    env = dict(env)
    detail = ""
    if kind in ("delay", "rows"):
        command = [sys.executable, "-m", "mmsearch", *args]
    else:
        nth = rng.randint(1, 4 if kind == "save" else 3)
        extra = {"commit": rng.uniform(0, 0.003), "save": rng.choice([0, 1])}.get(kind, 0)
        env["MMSEARCH_TEST_FAULT"] = f"{kind}:{nth}:{sig.name}:{extra}"
        command = [sys.executable, "-c", HOOK, *args]
        detail = env["MMSEARCH_TEST_FAULT"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kind == "delay":
        delay = rng.uniform(0.3, 6.0)
        for _ in range(4):  # a run with little to do can end first: then more changes, and a delay within its length
            detail = f"after {delay:.2f}s"
            started = time.monotonic()
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(sig)
                break
            took = time.monotonic() - started
            change()
            delay = rng.uniform(0.3, max(0.4, 0.8 * took))
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    elif kind == "rows":
        target = generation(db) + rng.randint(1, 3)
        detail = f"at generation {target}"
        while process.poll() is None and generation(db) < target:
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0, f"{kind} {detail}: the run finished before the kill; the round proves nothing"
    if kind not in ("delay", "rows") and sig == signal.SIGINT:  # Ctrl-C inside the run: a clean stop
        assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    return f"{kind} {detail} {sig.name} rc {process.returncode}"


def audit(db: Path, data: Path, expected: dict | None) -> dict[str, list[str]]:
    """What is wrong with the data dir: lost, duplicated and orphaned rows and files. Without ``expected``
    (just after a kill), only rows that must never exist: a killed run may leave work undone, never a wrong row."""
    with sqlite3.connect(db) as conn:
        items = conn.execute("SELECT id, path, status, caption FROM items").fetchall()
        vectors = conn.execute("SELECT item_id, kind FROM vectors").fetchall()
    by_id = {row[0]: row for row in items}
    by_path = collections.defaultdict(list)
    for row in items:
        by_path[row[1]].append(row)
    parts = collections.defaultdict(set)
    for item_id, part in vectors:
        parts[item_id].add(part)
    orphaned = [f"vector {i}/{p} of item {by_id.get(i, (0, 0, 'missing'))[2:]}" for i, p in vectors
                if i not in by_id or by_id[i][2] != "ok" or (p == "caption" and by_id[i][3] is None)]
    found = {"orphaned": orphaned, "lost": [], "duplicated": [p for p, rows in by_path.items() if len(rows) > 1]}
    if expected is not None:
        orphaned += [f"unfinished write {p.name}" for p in data.glob("*.tmp")]
        for path, (status, caption) in expected.items():
            rows = by_path.get(path, [])
            row = rows[0] if rows else None
            if row is None or row[2] != status:
                found["lost"].append(f"{path}: {'no row' if row is None else row[2]}, want {status}")
            elif status == "ok" and (row[3] != caption or ("content" not in parts[row[0]]) or
                                     (caption is not None) != ("caption" in parts[row[0]])):
                found["lost"].append(f"{path}: caption {row[3]!r} parts {sorted(parts[row[0]])}, want {caption!r}")
        found["duplicated"] += [f"{p}: row for a file not on disk" for p in by_path if p not in expected]
    return found


def test_index_survives_kills_at_random_points(tmp_path, request):
    count = request.config.getoption("--faults") or int(os.environ.get("MMSEARCH_FAULTS") or 5)
    seed = int(os.environ.get("MMSEARCH_FAULT_SEED") or SEED)
    print(f"\nfault injection: {count} kills, seed {seed} (replay: MMSEARCH_FAULT_SEED={seed} --faults {count})")
    rng = random.Random(seed)
    media, data = tmp_path / "media", tmp_path / "data"
    world = Collection(media, rng)
    settings = {"MMSEARCH_DATA_DIR": str(data), "MMSEARCH_MODEL": "tiny", "MMSEARCH_BATCH_SIZE": "2"}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}, **settings}
    from mmsearch.cli import cli
    warm = threading.Thread(target=importlib.import_module, args=("open_clip",))  # while the first run starts
    warm.start()
    totals = collections.Counter(kills=0, lost=0, duplicated=0, orphaned=0)
    failures, signals = [], {}
    started = time.monotonic()
    for number in range(count):
        if number:
            world.change()
        kind = KINDS[number % len(KINDS)]  # each kind's signal: drawn the first time, then the other in turn
        sig = signals.setdefault(kind, rng.choice(SIGNALS)) if number < len(KINDS) else \
            SIGNALS[(SIGNALS.index(signals[kind]) + number // len(KINDS)) % 2]
        what = kill_index(kind, sig, rng, media, env, data / "mmsearch.db", world.change)
        totals["kills"] += 1
        found = audit(data / "mmsearch.db", data, None) if (data / "mmsearch.db").exists() else {}
        warm.join()
        resumed = CliRunner().invoke(cli, ["index", str(media), "--json"], env=settings, catch_exceptions=False)
        assert resumed.exit_code == 0, f"round {number} ({what}, seed {seed}): resume failed: {resumed.output}"
        after = audit(data / "mmsearch.db", data, world.expected())
        verdict = CliRunner().invoke(cli, ["verify", "--json"], env=settings, catch_exceptions=False)
        if verdict.exit_code != 0:
            after["orphaned"].append(f"verify: {verdict.output.strip()}")
        for key in ("lost", "duplicated", "orphaned"):
            problems = sorted(set(found.get(key, []) + after[key]))
            totals[key] += len(problems)
            failures += [f"round {number} ({what}): {key}: {p}" for p in problems]
        print(f"round {number:2d} ({time.monotonic() - started:3.0f}s): {what:40s} resumed {resumed.stdout.strip()}")
    print(f"fault injection: {totals['kills']} kills, {totals['lost']} lost, {totals['duplicated']} duplicated, "
          f"{totals['orphaned']} orphaned (seed {seed})")
    assert not failures, f"seed {seed}:\n" + "\n".join(failures[:40])
    assert totals["kills"] == count


def test_a_write_killed_while_saving_the_index_leaves_no_temporary_file(runner, collection, data_dir):
    """The bug the kills found: SIGKILL while the index cache was saved left its temporary file (as large as
    the index) in the data dir for ever. Now verify names it and the next open of the index removes it;
    a file a live process is writing (it holds the file's lock) is left alone."""
    root, _ = collection
    assert runner("index", str(root), "--json").exit_code == 0
    killed = ("import os, signal, sys; from pathlib import Path; from mmsearch.files import atomic_write\n"
              "atomic_write(Path(sys.argv[1]), lambda tmp: (Path(tmp).write_bytes(b'half an index'),"
              " os.kill(os.getpid(), signal.SIGKILL)))")
    result = subprocess.run([sys.executable, "-c", killed, str(data_dir / "vectors.image.faiss")], cwd=ROOT)
    assert result.returncode == -signal.SIGKILL
    [dead] = data_dir.glob("vectors.image.faiss.*.tmp")
    live = data_dir / "vectors.text.faiss.being-written.tmp"
    with open(live, "wb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        verdict = runner("verify", "--json")
        assert verdict.exit_code == 1
        assert json.loads(verdict.stdout)["problems"] == [
            f"1 unfinished index file write(s) left by a stopped process, e.g. {dead.name}"]
        assert runner("index", str(root), "--json").exit_code == 0
        assert not dead.exists() and live.exists()
    live.unlink()
    assert runner("verify").exit_code == 0


# --- verify --repair -------------------------------------------------------------------------------------
def draw_pictures(client, db: Path) -> dict[str, Path]:
    """Every image's and sound's thumbnail or waveform, drawn through the API; the picture cache's files."""
    with sqlite3.connect(db) as conn:
        for (item_id,) in conn.execute("SELECT id FROM items WHERE modality != 'text' AND status = 'ok'"):
            assert client.get(f"/api/items/{item_id}/thumbnail").status_code == 200
    return {p.name: p for p in (db.parent / "thumbnails").iterdir()}


def test_verify_repair_rebuilds_every_cache_from_sql(runner, collection, data_dir, client):
    root, _ = collection
    assert runner("index", str(root), "--json").exit_code == 0
    drawn = draw_pictures(client, data_dir / "mmsearch.db")
    assert runner("remove", str(root / "sub dir"), "--json").exit_code == 0  # their pictures are now stale
    with sqlite3.connect(data_dir / "mmsearch.db") as conn:
        kept = {str(r[0]) for r in conn.execute("SELECT id FROM items")}
    unreadable = next(p for name, p in sorted(drawn.items()) if name.split("-")[0] in kept)
    unreadable.write_bytes(unreadable.read_bytes()[:100])  # cut short: it would be served as it is
    left = data_dir / "thumbnails" / "7.jpg.tmp"  # a write a killed server never finished
    left.write_bytes(b"half")
    (data_dir / "vectors.image.faiss").write_bytes(b"garbage, not an index")
    (data_dir / "vectors.text.faiss").unlink()

    verdict = runner("verify", "--json")
    assert verdict.exit_code == 1
    problems = "\n".join(json.loads(verdict.stdout)["problems"])
    for words in ("image index: vector index file is missing or unreadable", "text index: vector index file",
                  "picture cache: 1 unreadable", unreadable.name, "picture cache: 1 unfinished"):
        assert words in problems, problems

    repaired = runner("verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    document = json.loads(repaired.stdout)
    assert document["ok"] and document["problems"] == [] and document["found"] == problems.split("\n")
    assert "rebuilt the vector index from SQL" in document["repaired"][0]
    stale = sum(name.split("-")[0] not in kept for name in drawn)
    assert stale and document["repaired"][1].endswith(f": 1 unfinished, {stale} stale, 1 unreadable, "
                                                      f"{len(drawn) - stale - 1} usable")
    assert list((data_dir / "thumbnails").iterdir()) == []
    assert json.loads(runner("verify", "--json").stdout) == {"ok": True, "problems": []}
    assert set(draw_pictures(client, data_dir / "mmsearch.db")) <= set(drawn)  # drawn again on demand
    assert runner("verify").exit_code == 0


@pytest.mark.parametrize("damage, problem", [
    ("DELETE FROM vectors WHERE item_id = (SELECT min(id) FROM items WHERE status = 'ok')",
     "1 items marked ok have no vector"),  # an ok item lost its vector: no cache holds it
    ("UPDATE vectors SET data = substr(data, 1, 16), dim = 4 WHERE item_id = (SELECT min(item_id) FROM vectors)",
     "1 vectors were made by another model or have the wrong dimension"),  # the index cannot even be built
], ids=["missing vector", "wrong dimension"])
def test_verify_repair_leaves_a_problem_in_sql_and_says_so(runner, collection, data_dir, damage, problem):
    root, _ = collection
    assert runner("index", str(root), "--json").exit_code == 0
    with sqlite3.connect(data_dir / "mmsearch.db") as conn:
        conn.execute(damage)
    assert runner("verify").exit_code == 1
    repaired = runner("verify", "--repair")
    assert repaired.exit_code == 1, repaired.output
    assert f"problem: in SQL itself, not a cache, so not repaired: {problem}" in repaired.stdout
    assert "ok" not in repaired.stdout.splitlines()
    document = json.loads(runner("verify", "--repair", "--json").stdout)
    assert not document["ok"] and any(problem in p for p in document["problems"])
    assert runner("verify").exit_code == 1
