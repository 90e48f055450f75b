"""The command line: JSON documents, one-line errors, configuration by environment alone."""
from __future__ import annotations

import json
import shutil

import pytest

from .media import picture


def as_json(result) -> dict:
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def test_index_search_stats_json(runner, collection, data_dir):
    root, expected = collection
    report = as_json(runner("index", str(root), "--json"))
    assert set(report) == {"added", "updated", "moved", "removed", "unchanged", "failed", "tagged", "seconds"}
    assert report["failed"] == expected["failed"]

    stats = as_json(runner("stats", "--json"))
    assert stats["by_modality"] == {m: expected[m] for m in ("image", "audio", "text")}
    assert stats["model"] == {"name": "tiny", "pretrained": "random", "dim": 64}
    captions = len(expected["captioned"])
    assert stats["vectors"] == {"content": expected["image"] + expected["text"] + expected["audio"],
                                "caption": captions, "passage": 0, "segment": 0}
    disk = stats["index"].pop("disk_bytes")
    assert disk == sum(p.stat().st_size for p in data_dir.glob("vectors.*.faiss"))
    assert stats["index"].pop("disk_bytes_per_item") == round(disk / stats["index"]["items"], 1)
    ram = stats["index"].pop("ram_bytes")  # a Flat vector: 4 bytes a dimension, and its 8-byte id
    assert ram == stats["index"]["ntotal"] * (64 * 4 + 8)
    assert stats["index"].pop("ram_bytes_per_item") == round(ram / stats["index"]["items"], 1)
    assert stats["index"] == {"type": "auto", "items": expected["image"] + expected["text"] + expected["audio"],
                              "ntotal": expected["image"] + expected["text"] + expected["audio"] + captions,
                              "dim": 64, "device": "cpu",
                              "by_modality": {m: {"ntotal": expected[m] + (captions if m == "image" else 0),
                                                  "type": "Flat"} for m in ("image", "audio", "text")}}

    found = as_json(runner("search", "a dog on a beach", "-k", "4", "--json"))
    assert len(found["results"]) == 4 and found["took_ms"] >= 0
    scores = [r["score"] for r in found["results"]]
    assert scores == sorted(scores, reverse=True)
    # the one result document of the API, less its URLs (search.results)
    assert {"id", "path", "modality", "score", "name", "metadata"} <= set(found["results"][0])
    assert not {"media_url", "thumbnail_url"} & set(found["results"][0])

    images = as_json(runner("search", "--image", str(root / "green.png"), "--modality", "image", "--json"))
    assert images["results"][0]["path"] == str(root / "green.png")
    assert {r["modality"] for r in images["results"]} == {"image"}

    first = found["results"][2]["id"]
    like = as_json(runner("search", "--like", str(first), "-k", "3", "--json"))
    assert like["results"][0]["id"] == first

    failed = as_json(runner("failed", "--json"))["failed"]
    assert len(failed) == expected["failed"] and all(f["error"] for f in failed)
    assert as_json(runner("verify", "--json")) == {"ok": True, "problems": []}


def test_model_comes_from_the_data_dir_when_not_given(runner, collection, env):
    root, _ = collection
    as_json(runner("index", str(root), "--json"))
    from mmsearch.cli import cli
    from click.testing import CliRunner
    result = CliRunner().invoke(cli, ["search", "shapes", "--json"], env={"MMSEARCH_DATA_DIR": env["MMSEARCH_DATA_DIR"],
                                                                         "MMSEARCH_MODEL": None})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["results"]


def test_remove_and_rebuild(runner, collection, data_dir):
    root, _ = collection
    as_json(runner("index", str(root), "--json"))
    before = as_json(runner("stats", "--json"))["index"]["ntotal"]
    assert as_json(runner("remove", str(root / "sub dir"), "--json")) == {"removed": 3}
    assert as_json(runner("stats", "--json"))["index"]["ntotal"] == before - 3
    (data_dir / "vectors.image.faiss").unlink()
    assert runner("verify").exit_code == 1
    assert as_json(runner("rebuild-index", "--json"))["ntotal"] == before - 3
    assert runner("verify").exit_code == 0


def stale_after_new_picture(runner, root, data_dir, backup, index_file: str, picture_name: str, seed: int) -> None:
    """Keep a copy of an index file and its sidecar, index one new picture, then put the old pair back."""
    for suffix in ("", ".json"):
        shutil.copy(data_dir / (index_file + suffix), backup / (index_file + suffix))
    picture(seed).save(root / picture_name)
    as_json(runner("index", str(root), "--json"))
    for suffix in ("", ".json"):
        shutil.copy(backup / (index_file + suffix), data_dir / (index_file + suffix))


def test_stale_index_file_is_detected_and_rebuilt_on_open(runner, collection, data_dir, tmp_path):
    root, _ = collection
    as_json(runner("index", str(root), "--json"))
    stale_after_new_picture(runner, root, data_dir, tmp_path, "vectors.image.faiss", "new.png", 77)
    verdict = runner("verify", "--json")
    assert verdict.exit_code == 1 and json.loads(verdict.stdout)["problems"]
    found = as_json(runner("search", "--image", str(root / "new.png"), "--json"))
    assert found["results"][0]["path"] == str(root / "new.png"), "search must see the item the old cache lacked"
    assert runner("verify").exit_code == 0


def test_late_fusion_ranks_within_each_modality_or_over_everything(runner, collection, data_dir):
    root, expected = collection
    data_dir.mkdir(parents=True)
    (data_dir / "vectors.faiss").write_bytes(b"an earlier version's single index file")
    as_json(runner("index", str(root), "--json"))
    assert sorted(p.name for p in data_dir.glob("*.faiss")) == [f"vectors.{m}.faiss"
                                                                for m in ("audio", "image", "text")]
    late = as_json(runner("search", "shapes", "--fusion", "rrf", "--explain", "-k", "50", "--json"))
    assert (late["fusion"], late["index"]) == ("rrf", "modality")
    counted = sum(expected[m] for m in ("image", "audio", "text"))
    assert len(late["results"]) == counted  # every item, from three lists
    firsts = [r["modality"] for r in late["results"] if r["parts"][0]["rank"] == 1]
    assert sorted(firsts) == ["audio", "image", "text"]  # each modality's first
    fused = as_json(runner("search", "shapes", "--fusion", "rrf", "--index", "fused", "--explain", "-k", "50",
                           "--json"))
    assert fused["index"] == "fused" and len(fused["results"]) == counted
    assert [r["parts"][0]["rank"] for r in fused["results"]] == list(range(1, counted + 1))  # one list
    assert "late fusion" in one_line_error(runner("search", "shapes", "--index", "modality"))
    assert "'bogus' is not one of 'fused', 'modality'" in one_line_error(
        runner("search", "shapes", "--fusion", "rrf", "--index", "bogus"))
    assert "mmsearch search --help" in one_line_error(runner("search", "shapes", "-k", "0"))
    assert "No such command" in one_line_error(runner("bogus"))


def one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("args, fragment", [
    (["--model", "no-such-model"], "unknown model"),
    (["--model", "ViT-B-32", "--pretrained", "no-such-tag"], "no pretrained tag"),
    (["--model", "tiny", "--pretrained", "/nonexistent/weights.pt"], "does not exist"),
    (["--model", "ViT-B-32"], "cannot fetch weights"),
])
def test_model_errors_are_one_line_and_change_nothing(runner, collection, args, fragment, data_dir):
    root, _ = collection
    as_json(runner("index", str(root), "--json"))
    stats = as_json(runner("stats", "--json"))
    db = (data_dir / "mmsearch.db").read_bytes()
    # a fresh data dir for the download case: the stored tiny model would otherwise refuse first
    extra = {"HF_HUB_OFFLINE": "1"}
    if args == ["--model", "ViT-B-32"]:
        extra["MMSEARCH_DATA_DIR"] = str(data_dir.parent / "other")
    line = one_line_error(runner("index", str(root), *args, extra_env=extra))
    assert fragment in line
    assert as_json(runner("stats", "--json")) == stats
    assert (data_dir / "mmsearch.db").read_bytes() == db


def test_other_model_is_refused_without_reembed(runner, collection):
    root, _ = collection
    as_json(runner("index", str(root), "--json"))
    line = one_line_error(runner("search", "x", "--model", "tiny", "--pretrained", "openai",
                                 extra_env={"HF_HUB_OFFLINE": "1"}))
    assert "no pretrained tag" in line
    small = root.parent / "small"
    small.mkdir()
    picture(1).save(small / "a.png")
    line = one_line_error(runner("index", str(small), "--model", "ViT-B-32", "--pretrained", "random"))
    assert "--reembed" in line and "tiny" in line


def test_reembed_switches_model(runner, tmp_path, data_dir):
    root = tmp_path / "few"
    root.mkdir()
    for i in range(3):
        picture(i).save(root / f"{i}.png")
    (root / "note.txt").write_text("hello world")
    as_json(runner("index", str(root), "--json"))
    report = as_json(runner("index", str(root), "--model", "ViT-B-32", "--pretrained", "random", "--reembed", "--json"))
    assert report["updated"] == 4
    stats = as_json(runner("stats", "--json", "--model", "ViT-B-32", "--pretrained", "random"))
    assert stats["model"]["dim"] == 512 and stats["index"]["dim"] == 512 and stats["index"]["ntotal"] == 4
    assert runner("verify").exit_code == 0


@pytest.mark.parametrize("args, fragment", [
    (["index", "/no/such/folder"], "path not found"),
    (["search"], "give a query"),
    (["search", "x", "--dedupe", "lots"], "dedupe takes"),
    (["search", "cat - cat"], "cancel each other out"),
    (["search", "like:abc"], "like: needs an item id"),
    (["search", '"unclosed'], "cannot parse query"),
    (["search", "--like", "999"], "no item with id 999"),
    (["search", "--image", "/no/such.jpg"], "cannot read query image"),
    (["remove", "/no/such/thing"], "nothing indexed"),
    (["search", "--fusion", "rrf", "--", "-y"], "at least one part with a positive weight"),
    (["stats"], "invalid index_type 'IVF-nonsense'"),
])
def test_bad_input_one_line(runner, collection, args, fragment):
    root, _ = collection
    as_json(runner("index", str(root), "--json"))
    bad_index = {"MMSEARCH_INDEX_TYPE": "IVF-nonsense"} if "index_type" in fragment else None
    assert fragment in one_line_error(runner(*args, extra_env=bad_index))


def test_text_file_as_query_image(runner, collection):
    root, _ = collection
    as_json(runner("index", str(root), "--json"))
    assert "query image" in one_line_error(runner("search", "--image", str(root / "note.md")))


def test_data_dir_that_is_a_file(runner, tmp_path, collection):
    root, _ = collection
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    line = one_line_error(runner("index", str(root), extra_env={"MMSEARCH_DATA_DIR": str(blocker)}))
    assert "not a folder" in line
    assert blocker.read_text() == "keep me"


def test_bad_setting_values(runner, collection):
    root, _ = collection
    assert "batch_size" in one_line_error(runner("stats", extra_env={"MMSEARCH_BATCH_SIZE": "zero"}))
    line = one_line_error(runner("stats", extra_env={"MMSEARCH_DB_URL": "nosuchdialect://x"}))
    assert "cannot open database" in line


def test_the_cli_on_each_backend(runner, collection, backend, data_dir):
    """SQL on SQLite or PostgreSQL (ICU collation), vectors in FAISS files or milvus-lite: the same commands
    give the same answers, and the data goes where the settings say."""
    root, expected = collection
    chosen = {f"MMSEARCH_{name.upper()}": value for name, value in backend.items()}
    report = as_json(runner("index", str(root), "--json", extra_env=chosen))
    assert report["failed"] == expected["failed"] and report["added"] > 0
    assert (data_dir / "mmsearch.db").exists() == ("db_url" not in backend)
    assert bool(list(data_dir.glob("vectors.*.faiss"))) == ("vector_store" not in backend)
    stats = as_json(runner("stats", "--json", extra_env=chosen))
    assert stats["by_modality"] == {m: expected[m] for m in ("image", "audio", "text")}
    counted = sum(expected[m] for m in ("image", "audio", "text"))
    assert stats["index"]["items"] == counted
    prefix = str(root / "sub dir")
    found = as_json(runner("search", "shapes", "--path-prefix", prefix, "-k", "50", "--json", extra_env=chosen))
    assert found["results"] and all(r["path"].startswith(prefix + "/") for r in found["results"])
    late = as_json(runner("search", "shapes", "--fusion", "rrf", "-k", "50", "--json", extra_env=chosen))
    assert late["index"] == "modality" and len(late["results"]) == counted
    (root / "green.png").rename(root / "renamed.png")
    again = as_json(runner("index", str(root), "--json", extra_env=chosen))
    assert (again["moved"], again["added"], again["removed"]) == (1, 0, 0)
    assert as_json(runner("remove", prefix, "--json", extra_env=chosen))["removed"] == 3
    assert as_json(runner("rebuild-index", "--json", extra_env=chosen))["ntotal"] == counted - 3 + len(expected["captioned"])
    assert as_json(runner("verify", "--json", extra_env=chosen)) == {"ok": True, "problems": []}
