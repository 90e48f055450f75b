"""A killed or interrupted index run leaves a consistent data dir; the next run finishes the job."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from .conftest import ROOT
from .media import picture

FILES = 120  # at 2 files a batch the kill lands after the first commit, long before the last


def count_rows(db) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_index_resumes_consistently(tmp_path, data_dir, runner, sig):
    media = tmp_path / "media"
    media.mkdir()
    for i in range(FILES):
        picture(i, (48, 48)).save(media / f"{i:04d}.png")
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(data_dir), "MMSEARCH_MODEL": "tiny", "MMSEARCH_BATCH_SIZE": "2"}
    process = subprocess.Popen([sys.executable, "manage.py", "index", str(media), "--json"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = data_dir / "mmsearch.db"
    deadline = time.monotonic() + 120
    while count_rows(db) == 0 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    seen = count_rows(db)
    assert 0 < seen < FILES, f"the run was not stopped mid-way ({seen} rows); the test proves nothing"
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr

    # the next run in this process (torch is loaded already): what a kill leaves is on disk, not in memory
    resumed = runner("index", str(media), "--json", extra_env={"MMSEARCH_BATCH_SIZE": "16"})
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["added"] + report["unchanged"] == FILES and report["failed"] == 0, report
    assert report["unchanged"] >= seen - 2  # only the batch in flight may be redone
    assert runner("verify").exit_code == 0
    with sqlite3.connect(db) as conn:
        paths = [r[0] for r in conn.execute("SELECT path FROM items")]
        vectors = conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
    assert sorted(paths) == sorted(str(p) for p in media.iterdir())
    assert vectors == FILES
