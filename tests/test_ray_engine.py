"""`index --engine ray` (issue #16): decoding in Ray tasks and embedding in a pool of model actors, planned and
committed by the same code as the local engine, so it stores the same items and vectors, stays incremental and
survives a kill the same way. One local Ray (2 CPUs) serves the whole module; the killed run joins it as a
second driver through RAY_ADDRESS, as a run on a cluster would."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from .conftest import ROOT
from .media import make_collection, picture, tone_wav

LONG_NOTE = " ".join(f"word{i} about the harbour, the boats and the weather on day {i}." for i in range(120))
KILLED_FILES = 64  # at 2 files a batch: the kill lands after the first commits, long before the last


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module, as quiet as the CLI keeps its own; its address for other processes."""
    import ray  # the test extra installs it (mmsearch[ray]); imported here, not when the suite is collected
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def cli(data_dir: Path, *args: str):
    from mmsearch.cli import cli as group
    env = {"MMSEARCH_DATA_DIR": str(data_dir), "MMSEARCH_MODEL": "tiny", "MMSEARCH_BATCH_SIZE": "4"}
    return CliRunner().invoke(group, list(args), env=env, catch_exceptions=False)


def snapshot(data_dir: Path) -> tuple[dict, dict]:
    """Every item (by path) and every vector (by path, slot, kind and span) in the data dir's SQL."""
    with sqlite3.connect(data_dir / "mmsearch.db") as db:
        items = {r[0]: r[1:] for r in db.execute(
            "SELECT path, modality, status, error, content_hash, caption, text, mime, width, height, duration, "
            "layout FROM items")}
        vectors = {tuple(r[:5]): (r[5], np.frombuffer(r[6], "<f4")) for r in db.execute(
            "SELECT i.path, v.slot, v.kind, v.span_start, v.span_end, v.encoder, v.data FROM vectors v "
            "JOIN items i ON i.id = v.item_id")}
    return items, vectors


@pytest.fixture(scope="module")
def indexed(ray_address, tmp_path_factory):
    """A generated folder (images, notes incl. a long one, sounds incl. a long one, broken files) indexed by
    each engine into its own data dir; the snapshots are taken before any test changes the folder."""
    base = tmp_path_factory.mktemp("ray-engine")
    media = base / "media"
    make_collection(media)
    (media / "long note.md").write_text(LONG_NOTE)
    tone_wav(media / "long tone.wav", 330.0, seconds=5.0)
    out = {}
    for engine in ("local", "ray"):
        result = cli(base / engine, "index", str(media), "--engine", engine, "--json")
        assert result.exit_code == 0, result.output
        out[engine] = (json.loads(result.stdout), snapshot(base / engine))
    return media, base, out


def test_ray_engine_stores_the_same_items_and_vectors_as_the_local_one(indexed):
    _, _, out = indexed
    (local_report, (local_items, local_vectors)), (ray_report, (ray_items, ray_vectors)) = out["local"], out["ray"]
    drop = ("seconds", "tagged")
    assert {k: v for k, v in ray_report.items() if k not in drop} == \
        {k: v for k, v in local_report.items() if k not in drop}
    assert ray_items == local_items  # statuses, failure reasons, hashes, captions, texts, metadata, layout
    assert sum(1 for item in local_items.values() if item[1] == "failed") == 4  # the broken files, same reasons
    assert ray_vectors.keys() == local_vectors.keys()
    kinds = {key[2] for key in local_vectors}
    assert kinds == {"content", "caption", "passage", "segment"}, kinds  # every kind is compared below
    for key, (encoder, vector) in local_vectors.items():
        assert ray_vectors[key][0] == encoder
        np.testing.assert_allclose(ray_vectors[key][1], vector, atol=1e-5, err_msg=str(key))


def test_a_second_ray_run_embeds_nothing_and_moves_and_copies_are_not_embedded(indexed):
    media, base, out = indexed
    data = base / "ray"
    again = cli(data, "index", str(media), "--engine", "ray", "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert (report["added"], report["updated"], report["moved"], report["failed"]) == (0, 0, 0, 0), report
    assert report["unchanged"] == len(out["ray"][1][0])
    before = snapshot(data)[1]
    assert before.keys() == out["ray"][1][1].keys()

    shutil.move(media / "green.png", media / "sub dir" / "moved green.png")
    shutil.copy(media / "purple.gif", media / "purple copy.gif")
    moved = cli(data, "index", str(media), "--engine", "ray", "--json")
    assert moved.exit_code == 0, moved.output
    report = json.loads(moved.stdout)
    assert (report["moved"], report["added"], report["removed"], report["updated"]) == (1, 1, 0, 0), report
    after = snapshot(data)[1]
    key = (str(media / "sub dir" / "moved green.png"), 0, "content", None, None)
    np.testing.assert_array_equal(after[key][1], before[(str(media / "green.png"), 0, "content", None, None)][1])
    np.testing.assert_array_equal(after[(str(media / "purple copy.gif"), 0, "content", None, None)][1],
                                  after[(str(media / "purple.gif"), 0, "content", None, None)][1])
    assert cli(data, "verify").exit_code == 0


def count_items(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_ray_run_killed_mid_way_resumes_with_nothing_lost_or_duplicated(ray_address, tmp_path):
    media, data = tmp_path / "media", tmp_path / "data"
    media.mkdir()
    for i in range(KILLED_FILES):
        picture(i, (48, 48)).save(media / f"{i:04d}.png")
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(data), "MMSEARCH_MODEL": "tiny", "MMSEARCH_BATCH_SIZE": "2",
           "RAY_ADDRESS": ray_address}
    process = subprocess.Popen([sys.executable, "manage.py", "index", str(media), "--engine", "ray", "--json"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while count_items(data / "mmsearch.db") == 0 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # the CLI process, mid-run: its Ray tasks and actors die with it
    _, stderr = process.communicate(timeout=60)
    seen = count_items(data / "mmsearch.db")
    assert 0 < seen < KILLED_FILES, f"the run was not stopped mid-way ({seen} rows); {stderr[-2000:]}"

    resumed = cli(data, "index", str(media), "--engine", "ray", "--json")
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["added"] + report["unchanged"] == KILLED_FILES and report["failed"] == 0, report
    assert report["unchanged"] >= seen - 2  # only the batch in flight may be redone
    assert cli(data, "verify").exit_code == 0
    with sqlite3.connect(data / "mmsearch.db") as db:
        paths = [r[0] for r in db.execute("SELECT path FROM items")]
        per_item = db.execute("SELECT item_id, count(*) FROM vectors GROUP BY item_id").fetchall()
        ids = [r[0] for r in db.execute("SELECT (item_id << 20) | slot FROM vectors")]
    assert sorted(paths) == sorted(str(p) for p in media.iterdir())  # item count = file count, no duplicate
    assert len(per_item) == KILLED_FILES and all(n == 1 for _, n in per_item)
    assert len(ids) == len(set(ids)) == KILLED_FILES


def test_engine_options_are_checked(tmp_path):
    picture(1).save(tmp_path / "one.png")
    result = cli(tmp_path / "data", "index", str(tmp_path), "--num-gpus", "1")
    assert result.exit_code == 2 and "--engine ray" in result.output
    result = cli(tmp_path / "data", "index", str(tmp_path), "--engine", "spark")
    assert result.exit_code == 2


def test_a_missing_ray_is_one_line(tmp_path, monkeypatch):
    picture(1).save(tmp_path / "one.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError, as when not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    result = cli(tmp_path / "data", "index", str(tmp_path), "--engine", "ray")
    assert result.exit_code == 1
    assert result.output.strip() == "error: index --engine ray needs ray: pip install 'mmsearch[ray]'"
    assert not (tmp_path / "data" / "mmsearch.db").exists() or count_items(tmp_path / "data" / "mmsearch.db") == 0
