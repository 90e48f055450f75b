"""The CLI contract of issue 10, each point as it was measured failing: a missing data dir is one line and
creates nothing; --json errors are one JSON document on stdout; a path-like term that is no file is an
error; every setting can be listed with its source; help names only settings that exist; the command
works from any folder."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from mmsearch.cli import cli
from mmsearch.settings import ENV_PREFIX, SETTINGS

from .media import picture

READ_ONLY = [["search", "anything"], ["stats"], ["verify"], ["failed"], ["remove", "/x"], ["rebuild-index"],
             ["search", "--like", "1"]]


def error_document(result, status: int) -> dict:
    assert result.exit_code == status, (result.exit_code, result.stdout, result.stderr)
    document = json.loads(result.stdout)  # exactly one document: json.loads refuses trailing data
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message"}
    assert "\n" not in document["error"]["message"] and "Traceback" not in result.output
    return document["error"]


@pytest.mark.parametrize("args", READ_ONLY)
def test_read_only_command_on_a_missing_data_dir_creates_nothing(runner, tmp_path, args):
    missing = tmp_path / "no" / "such" / "dir"
    result = runner(*args, "--data-dir", str(missing))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no data dir at ") and str(missing) in lines[0]
    assert not (tmp_path / "no").exists()
    error = error_document(runner(*args, "--data-dir", str(missing), "--json"), 1)
    assert error["code"] == "data_dir" and not (tmp_path / "no").exists()


@pytest.mark.parametrize("args, status, code", [
    (["search", "x", "-k", "0"], 2, "usage"),  # a bad option value
    (["search", "x", "--bogus"], 2, "usage"),  # an unknown option, before any option is parsed
    (["search", "--fusion", "max", "x"], 2, "usage"),
    (["search", "like:abc"], 1, "bad_request"),
    (["search", "--like", "999"], 1, "bad_request"),
    (["index", "/no/such/folder"], 1, "bad_request"),
])
def test_json_errors_are_one_document_on_stdout(runner, collection, args, status, code):
    root, _ = collection
    assert runner("index", str(root), "--json").exit_code == 0
    error = error_document(runner(*args, "--json"), status)
    assert error["code"] == code
    plain = runner(*args)  # the same error without --json: one line on stderr, nothing on stdout
    assert plain.exit_code == status and plain.stdout == "" and len(plain.stderr.strip().splitlines()) == 1


def test_path_like_terms_must_exist(runner, collection, tmp_path, monkeypatch):
    root, _ = collection
    assert runner("index", str(root), "--json").exit_code == 0
    monkeypatch.chdir(tmp_path)
    for term in ["./photo.jpg", "holiday/beach.png", "doorbell.wav"]:
        error = error_document(runner("search", f'"sunset" + 0.5:{term} - "people"', "--json"), 1)
        assert error["message"].startswith(f"no such file: {term}")
    quoted = runner("search", '"./photo.jpg" + "AC/DC"', "--json")  # quoted: words
    assert quoted.exit_code == 0 and json.loads(quoted.stdout)["results"]
    picture(3).save(tmp_path / "photo.jpg")
    found = runner("search", '"sunset" + 0.5:./photo.jpg - "people"', "--json", "--explain")
    assert found.exit_code == 0, found.stderr
    assert [p["kind"] for p in json.loads(found.stdout)["parts"]] == ["text", "image", "text"]


def test_empty_library_says_how_to_fill_it(runner, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner("search", "x", "--data-dir", str(empty))
    assert result.exit_code == 1 and "nothing indexed yet: run 'mmsearch index PATH'" in result.stderr
    stats = runner("stats", "--data-dir", str(empty))
    assert stats.exit_code == 0 and "nothing indexed yet" in stats.stdout


def test_settings_lists_every_value_and_its_source(runner, tmp_path):
    config = tmp_path / "mmsearch.toml"
    config.write_text('device = "cpu"\nadmin_token = "s3cret"\n')
    result = runner("settings", "--json", "--config", str(config), "--db-url", "postgresql://me:pw@db/x",
                    extra_env={"MMSEARCH_NPROBE": "4"})
    assert result.exit_code == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["settings"]}
    assert list(rows) == [s.name for s in SETTINGS]
    assert (rows["db_url"]["source"], rows["db_url"]["from"]) == ("flag", "--db-url")
    assert rows["db_url"]["value"] == "postgresql://me:***@db/x"  # no password printed
    assert (rows["nprobe"]["value"], rows["nprobe"]["source"], rows["nprobe"]["from"]) == (4, "env", "MMSEARCH_NPROBE")
    assert (rows["device"]["value"], rows["device"]["source"], rows["device"]["from"]) == ("cpu", "config", str(config))
    assert rows["admin_token"]["value"] == "***" and "s3cret" not in result.stdout
    assert rows["workers"]["source"] == "default" and rows["model"]["source"] == "env"  # the fixture's env
    human = runner("settings", "--config", str(config))
    assert human.exit_code == 0 and re.search(r"^device\s+cpu\s+config ", human.stdout, re.M)


def test_global_flags_come_from_the_settings_table():
    flagged = {s.name for s in SETTINGS if s.flag}
    for command in cli.commands.values():
        if isinstance(command, click.Group):
            continue
        names = {p.name for p in command.params}
        assert flagged <= names, (command.name, flagged - names)


def _helps(command: click.Command, path: str = "mmsearch"):
    with click.Context(command, info_name=path) as ctx:
        yield path, command.get_help(ctx)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _helps(sub, f"{path} {name}")


def test_help_names_only_settings_that_exist():
    known = {s.env for s in SETTINGS} | {ENV_PREFIX + "CONFIG"}
    named = {(path, env) for path, text in _helps(cli) for env in re.findall(r"MMSEARCH_[A-Z_]+", text)}
    assert named and not {(path, env) for path, env in named if env not in known}


def test_the_command_works_from_any_folder(tmp_path, data_dir):
    """python -m mmsearch from outside the checkout: the package, not the folder, is on the path."""
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(data_dir), "MMSEARCH_MODEL": "tiny"}
    env.pop("PYTHONPATH", None)
    run = subprocess.run([sys.executable, "-m", "mmsearch", "index", str(tmp_path / "media"), "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 1 and json.loads(run.stdout)["error"]["message"].startswith("path not found")
    (tmp_path / "media").mkdir()
    picture(1).save(tmp_path / "media" / "one.png")
    for args in (["index", "media"], ["stats"]):
        run = subprocess.run([sys.executable, "-m", "mmsearch", *args, "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["items"] == 1


def _readme_command_rows() -> dict[str, str]:
    """The README command table: the first command word of each row → the row."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z][a-z-]*)[ `].*$", readme, re.M)}


def test_readme_option_lists_name_every_option_with_its_default():
    """A command row that says "Options:" names each of the command's own options, and the defaults it
    shows (--name NUMBER) are the parser's (a trial found train-audio's row showing the old ones)."""
    rows = {name: row for name, row in _readme_command_rows().items() if "Options:" in row}
    assert {"train-audio", "evaluate"} <= set(rows)
    shared = {s.name for s in SETTINGS if s.flag} | {"config_file", "as_json"}
    for name, row in rows.items():
        command = cli.commands[name]
        options = {p.name: p for p in command.params if isinstance(p, click.Option) and p.name not in shared}
        for option in options.values():
            assert any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", row) for o in option.opts), \
                (name, option.opts)
        by_flag = {o: option for option in options.values() for o in option.opts}
        shown = re.findall(r"(--[a-z][a-z-]*) (\d[\d.e-]*)(?=[ `,])", row)
        assert shown or name != "train-audio"
        for flag, value in shown:
            assert float(by_flag[flag].default) == float(value), (name, flag, value, by_flag[flag].default)


def test_train_audio_help_says_how_the_kept_epoch_is_chosen():
    from types import SimpleNamespace
    from click.testing import CliRunner
    from mmsearch.encoders.audio_training import Trainer, TrainOptions
    text = " ".join(CliRunner().invoke(cli, ["train-audio", "--help"]).stdout.split())
    assert text.count("R@1 plus text→audio R-precision") == 2, text  # the description and --patience
    # ... which is what the code keeps: an epoch of lower R@1 but better text→audio R-precision wins
    trainer = SimpleNamespace(options=TrainOptions())
    assert Trainer._key(trainer, 0.5, 0.6, 1.0, 0.4) > Trainer._key(trainer, 0.6, 0.6, 1.0, 0.1)
    assert TrainOptions().select == "r1"
