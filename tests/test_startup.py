"""Commands that need no model start without torch or open_clip (~4 s of imports on a small machine).

Each command runs in a fresh interpreter under a wrapper that writes sys.modules at exit, so what is
checked is what the real command line imported, not what a test process happened to import before.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MODEL = {"torch", "open_clip"}
# argv[1] is the output file; the rest is the command line, run as `python -m mmsearch` runs it.
RECORDER = ("import atexit, runpy, sys\n"
            "out = sys.argv.pop(1)\n"
            "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))\n"
            "sys.argv[0] = 'mmsearch'\n"
            "runpy.run_module('mmsearch', run_name='__main__', alter_sys=True)\n")


def run_recorded(data_dir: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """The command's result and the top-level packages it had imported when it exited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(MMSEARCH_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", RECORDER, str(out), *args], env=env, capture_output=True,
                            text=True, timeout=600)
    modules = set(out.read_text().split("\n")) if out.exists() else set()
    return result, {name.split(".")[0] for name in modules}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("startup") / "data"
    result, _ = run_recorded(data_dir, data_dir.parent / "index.txt", "index", str(SAMPLES), "--model", "tiny",
                             "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] > 0
    return data_dir


@pytest.mark.parametrize("args, absent", [
    (["stats", "--json"], MODEL | {"librosa"}),
    (["verify", "--json"], MODEL | {"librosa"}),
    (["failed", "--json"], MODEL | {"librosa"}),
    (["index", str(SAMPLES), "--json"], MODEL),
    (["search", "--like", "1", "--json"], MODEL),
], ids=["stats", "verify", "failed", "no-op index", "search --like"])
def test_commands_without_a_model_never_import_it(indexed, tmp_path, args, absent):
    result, imported = run_recorded(indexed, tmp_path / "modules.txt", *args)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # the command did its work, not an early exit
    if args[0] == "index":
        assert document["added"] == document["updated"] == 0 and document["unchanged"] > 0
    if args[0] == "search":
        assert document["results"][0]["id"] == 1
    assert "mmsearch" in imported
    assert imported & absent == set(), f"{args[0]} imported {sorted(imported & absent)}"


def test_a_text_search_does_load_the_model(indexed, tmp_path):
    """The recorder sees the model when there is one: the tests above can fail."""
    result, imported = run_recorded(indexed, tmp_path / "modules.txt", "search", "a red apple", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"]
    assert MODEL <= imported
