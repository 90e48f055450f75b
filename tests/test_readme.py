"""Every shell example in the README runs as written, from the repo root, against the sample collection.

The convention (README.md says it where it matters):

- every fenced block whose info string is ``sh`` holds examples, one per line (a line ending in ``\\``
  continues on the next); blank lines and lines that are only a comment are not examples;
- a line whose comment says ``# not run: REASON`` is shown but not run here (a set-up command, ``serve``, a
  download, a manifest you do not have): keep that list short;
- a line whose comment says ``# exit N`` must exit with N and report one error (one ``error: ...`` line on
  stderr, or with ``--json`` one ``{"error": ...}`` document on stdout); every other example must exit 0;
- an example with ``--json`` must print exactly one JSON document on stdout, and so must each ``curl``
  example that does not write its body to a file with ``-o``.

The samples are indexed with ``--model tiny`` into a temporary data dir (``MMSEARCH_DATA_DIR``,
``MMSEARCH_MODEL=tiny`` in the environment), and ``mmsearch serve`` runs over it on a free port, which
replaces ``localhost:5000`` in the curl examples; curl is run with ``--fail``, so an HTTP error fails too.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOKEN = "readme-test-token"
HANG = 900  # seconds: only a guard against a hung example, never a measure of speed
MAX_NOT_RUN = 8

FENCE = re.compile(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"\s#\s*not run:\s*(\S.*)$")
EXIT = re.compile(r"\s#\s*exit (\d+)\b")
# curl is run with --fail: a 4xx/5xx answer is a non-zero exit, not a JSON error document printed with 0
PRELUDE = 'curl() { command curl --fail --show-error "$@"; }\n'


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line in the README
    command: str
    not_run: str | None  # the reason, for examples the test does not run
    exit: int

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.command}"


def extract(markdown: str) -> list[Example]:
    examples = []
    for block in FENCE.finditer(markdown):
        first = markdown.count("\n", 0, block.start(1)) + 1
        pending, start = "", 0
        for offset, raw in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first + offset
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            line, pending = (pending + raw).strip(), ""
            if not line or line.startswith("#"):
                continue
            reason, status = NOT_RUN.search(line), EXIT.search(line)
            examples.append(Example(start, line, reason.group(1).strip() if reason else None,
                                    int(status.group(1)) if status else 0))
    return examples


def check(example: Example, result: subprocess.CompletedProcess) -> str | None:
    """Why this run of the example is wrong, or None."""
    said = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    if result.returncode != example.exit:
        return f"expected exit {example.exit}, got {said}"
    words = shlex.split(example.command, comments=True)
    wants_json = "--json" in words
    if wants_json or (words and words[0] == "curl" and "-o" not in words):
        try:
            document = json.loads(result.stdout)
        except ValueError as exc:
            return f"stdout is not one JSON document ({exc}): {said}"
        if example.exit and not (isinstance(document, dict) and set(document) == {"error"}
                                 and {"code", "message"} <= set(document["error"])):
            return f"an error with --json must be one {{'error': {{code, message}}}} document: {said}"
    elif example.exit:
        lines = result.stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return f"an error must be one 'error: ...' line on stderr: {said}"
    return None


# Examples that only read the data dir: they may run beside each other. Each spends seconds on one core
# importing torch and open_clip, so on 2 cores two at a time take about half as long; every other example
# (one that writes, or that a later one reads the output of) waits for all before it and runs alone.
READ_ONLY = re.compile(r"^(python -m )?mmsearch (search|stats|settings|verify|failed|tags)\b")


def run_example(example: Example, env: dict[str, str], port: int | None) -> str | None:
    """Run one example; why it failed, or None."""
    command = example.command if port is None else example.command.replace("localhost:5000", f"localhost:{port}")
    try:
        result = subprocess.run(["bash", "-o", "pipefail", "-c", PRELUDE + command], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=HANG)
    except subprocess.TimeoutExpired:
        return f"{example}\n  hung for {HANG}s"
    problem = check(example, result)
    return f"{example}\n  {problem}" if problem else None


def run_examples(examples: list[Example], env: dict[str, str], port: int | None = None) -> list[str]:
    """Run every example that is not marked 'not run', in order (read-only ones two at a time: READ_ONLY);
    the failures, one message each, in the README's order."""
    outcomes = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for example in examples:
            if example.not_run:
                continue
            if READ_ONLY.match(example.command):
                outcomes.append(pool.submit(run_example, example, env, port))
                continue
            wait(outcomes)
            outcomes.append(pool.submit(run_example, example, env, port))
            wait(outcomes)
    return [problem for outcome in outcomes if (problem := outcome.result())]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return extract(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The examples' environment: the samples' temporary data dir and the tiny model, nothing else of ours."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    return {**base, "MMSEARCH_DATA_DIR": str(tmp_path_factory.mktemp("readme") / "data"),
            "MMSEARCH_MODEL": "tiny", "HF_HUB_OFFLINE": "1", "TOKEN": TOKEN}


@pytest.fixture(scope="module")
def example_env(env, tmp_path_factory) -> dict[str, str]:
    """The examples' environment, whose ``mmsearch`` is a fork of one warm interpreter (tests/zygote.py)."""
    from .zygote import Zygote
    zygote = Zygote(tmp_path_factory.mktemp("zygote"), env)
    yield {**env, "PATH": zygote.bin + os.pathsep + env.get("PATH", "")}
    zygote.close()


@pytest.fixture(scope="module")
def indexed(env) -> dict:
    """`mmsearch index samples --model tiny`, in this process (the suite has loaded torch already)."""
    from click.testing import CliRunner
    from mmsearch.cli import cli
    result = CliRunner().invoke(cli, ["index", str(ROOT / "samples"), "--model", "tiny", "--json"],
                                env={**{k: None for k in os.environ if k.startswith("MMSEARCH_")},
                                     **{k: v for k, v in env.items() if k.startswith("MMSEARCH_")}},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 10 and report["failed"] == 0, report
    return report


@pytest.fixture(scope="module")
def server(env, indexed):
    """`mmsearch serve` over the samples' data dir, with an admin token for the upload and delete examples."""
    port = _free_port()
    process = subprocess.Popen(["mmsearch", "serve", "--port", str(port)], cwd=ROOT,
                               env={**env, "MMSEARCH_ADMIN_TOKEN": TOKEN},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"mmsearch serve exited with {process.returncode}: {process.stderr.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as answer:
                    if json.load(answer) == {"status": "ok"}:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mmsearch serve did not answer on port {port}")
            time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as answer:
        return json.load(answer)


def test_the_sample_table_gives_each_id_its_file_and_caption(server):
    """The README's table of the sample collection is what indexing samples/ gives: ids, files, captions."""
    readme = README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `(samples/[^`]+)` \| (\w+) \|(.*?)\|$", readme, re.MULTILINE)
    assert len(rows) == 10 == _get(server, "/api/stats")["items"]
    for number, path, modality, sidecar in rows:
        item = _get(server, f"/api/items/{number}")
        assert (Path(item["path"]).relative_to(ROOT).as_posix(), item["modality"]) == (path, modality), number
        caption = re.search(r'"(.+)"', sidecar)
        assert item.get("caption") == (caption.group(1) if caption else None), number


def test_every_readme_example_runs(examples, example_env, server):
    written = {Path(words[words.index("-o") + 1]) for words in (shlex.split(e.command, comments=True)
                                                                  for e in examples if not e.not_run)
               if "-o" in words}
    already = {path for path in written if (ROOT / path).exists()}
    missing_dir = Path("/nonexistent/data")  # the README's data dir that does not exist
    existed = missing_dir.exists()
    try:
        failures = run_examples(examples, example_env, server)
        for path in written - already:
            if not (ROOT / path).is_file() or not (ROOT / path).stat().st_size:
                failures.append(f"curl -o {path} wrote nothing")
    finally:
        for path in written - already:
            (ROOT / path).unlink(missing_ok=True)
    assert not failures, "README examples that fail:\n" + "\n".join(failures)
    assert existed or not missing_dir.exists(), "a read-only command created the missing data dir"


def test_the_examples_cover_the_commands_and_few_are_left_out(examples):
    run = [e for e in examples if not e.not_run]
    left_out = [e for e in examples if e.not_run]
    assert len(left_out) <= MAX_NOT_RUN, "\n".join(map(str, left_out))
    assert all(e.not_run.strip(" .") for e in left_out)
    first_words = {shlex.split(e.command, comments=True)[0] for e in run}
    assert {"mmsearch", "curl", "python"} <= first_words
    assert sum(e.exit != 0 for e in run) >= 3  # the error contract is shown (and checked) as examples
    ran = " ".join(e.command for e in run)
    for command in ("index", "search", "stats", "settings", "verify", "failed", "migrate", "models fetch"):
        assert f"mmsearch {command}" in ran, command
    assert "--json" in ran and "localhost:5000/api/items" in ran


def test_the_test_command_is_what_ci_runs():
    """The README's test command ends as .ci/run ends: install the test extra, then pytest -q."""
    readme = README.read_text(encoding="utf-8")
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert re.fullmatch(r"python3? -m pytest -q", ci[-1]), ci[-1]
    assert any(re.search(r"pip install (-q )?-e '\.\[test\]'", line) for line in ci)
    assert "pip install -e '.[test]' && python -m pytest -q" in readme


def test_a_broken_example_fails_the_check(tmp_path):
    """The harness itself: wrong exits, a missing file, non-JSON output and a bare error are all caught."""
    markdown = "\n".join([
        "```sh",
        "true",
        "false",
        "ls samples/photos/no-such-photo.jpg",
        "echo not-json --json",
        ": --json && echo '{\"a\": 1}' '{\"b\": 2}'",
        ": --json && echo '{\"a\": 1}'",
        "echo 'error: one line' >&2; exit 1  # exit 1: an error",
        "echo 'no prefix' >&2; exit 1  # exit 1: an error",
        "true  # exit 2: should have failed",
        "false  # not run: shown only",
        "echo continued \\",
        "  line",
        "```",
        "```console",
        "false",
        "```",
    ])
    examples = extract(markdown)
    assert [e.line for e in examples] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    failures = run_examples(examples, {**os.environ})
    failed_lines = sorted(int(re.match(r"README.md:(\d+):", f).group(1)) for f in failures)
    assert failed_lines == [3, 4, 5, 6, 9, 10], failures


def test_the_forked_mmsearch_behaves_as_the_console_script(example_env, env, tmp_path):
    """The examples' ``mmsearch`` (a fork of a warm interpreter) gives the console script's output and exit
    status for the same command line, folder, environment and standard input."""
    (tmp_path / "q.csv").write_text("query,relevant\nholiday,nowhere.txt\n")
    commands = ["mmsearch --version",
                "MMSEARCH_MAX_AUDIO_SECONDS=12 mmsearch settings --json",
                "mmsearch stats --data-dir ./no-data-here",  # an error: one line, exit 1
                "mmsearch search --json --data-dir ./no-data-here holiday",
                "cat q.csv | mmsearch evaluate - --data-dir ./no-data-here --json",
                "mmsearch search --no-such-option"]  # exit 2
    for command in commands:
        forked, real = (subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, env=environment,
                                       capture_output=True, text=True, timeout=HANG) for environment in (example_env, env))
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr), command
    which = subprocess.run(["bash", "-c", "type -P mmsearch"], env=example_env, capture_output=True, text=True)
    assert Path(which.stdout.strip()).read_text().count("send_fds") == 1  # the fork's client, not the script
