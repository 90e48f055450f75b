"""`mmsearch evaluate` (issue 15, point 3's retrieval half): the metrics on hand-made rankings whose figures
are worked out by hand, and the command on the samples, where some ranks are certain whatever the random
tiny model does and every figure must be what the metrics give for `search --json`'s own results."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from mmsearch.search import evaluation

ROOT = Path(__file__).resolve().parents[1]


# --- the metrics -------------------------------------------------------------------------------------
def test_a_hand_built_ranking():
    ranked, relevant = ["x", "a", "y", "b"], {"a", "b"}
    assert evaluation.recall_at(ranked, relevant, 1) == 0  # x is not relevant
    assert evaluation.recall_at(ranked, relevant, 5) == 1  # a and b both in the top 5
    assert evaluation.reciprocal_rank(ranked, relevant) == 0.5  # the first relevant, a, is at rank 2
    # DCG: a at rank 2 → 1/log2(3), b at rank 4 → 1/log2(5); ideal: ranks 1 and 2 → 1/log2(2) + 1/log2(3)
    assert evaluation.ndcg_at(ranked, relevant) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5))
                                                                 / (1 + 1 / math.log2(3)), abs=1e-15)
    assert evaluation.ranks(ranked, relevant) == [2, 4]
    assert evaluation.scores(ranked, relevant) == pytest.approx(
        {"recall@1": 0, "recall@5": 1, "recall@10": 1, "mrr": 0.5, "ndcg@10": 0.6509209298071326})


def test_nothing_found_and_everything_found():
    assert evaluation.scores(["x", "y"], {"a"}) == {"recall@1": 0, "recall@5": 0, "recall@10": 0, "mrr": 0,
                                                    "ndcg@10": 0}
    assert evaluation.ranks(["x"], {"a"}) == [None]
    assert evaluation.scores(["a", "x"], {"a"}) == {"recall@1": 1, "recall@5": 1, "recall@10": 1, "mrr": 1,
                                                    "ndcg@10": 1}


def test_the_cutoffs():
    ranked = [f"r{n}" for n in range(1, 13)]  # r1 … r12, all relevant: the ideal list, cut at 10
    assert evaluation.ndcg_at(ranked, set(ranked)) == pytest.approx(1)
    assert evaluation.recall_at(ranked, set(ranked), 10) == 10 / 12
    # one relevant item at rank 6: outside R@5, inside R@10; MRR 1/6; nDCG 1/log2(7) over an ideal of 1
    late = ["x1", "x2", "x3", "x4", "x5", "a", "x7"]
    assert evaluation.scores(late, {"a"}) == pytest.approx(
        {"recall@1": 0, "recall@5": 0, "recall@10": 1, "mrr": 1 / 6, "ndcg@10": 1 / math.log2(7)})
    assert evaluation.scores(["x"] * 10 + ["a"], {"a"})["ndcg@10"] == 0  # rank 11: past nDCG@10, in MRR
    assert evaluation.reciprocal_rank(["x"] * 10 + ["a"], {"a"}) == 1 / 11
    with pytest.raises(ValueError):
        evaluation.recall_at(["a"], set(), 1)


def test_means_per_modality_pair():
    one = evaluation.scores(["a"], {"a"})
    half = evaluation.scores(["x", "a", "y", "b"], {"a", "b"})
    zero = evaluation.scores(["x"], {"a"})
    report = evaluation.summary([("text", "image", one), ("text", "image", zero), ("image", "mixed", half)])
    assert report["overall"] == pytest.approx({"queries": 3, "recall@1": 1 / 3, "recall@5": 2 / 3, "recall@10": 2 / 3,
                                               "mrr": 1.5 / 3, "ndcg@10": (1 + 0.6509209298071326) / 3})
    assert [(g["query"], g["result"], g["queries"], g["mrr"]) for g in report["by_modality"]] == [
        ("image", "mixed", 1, 0.5), ("text", "image", 2, 0.5)]
    assert evaluation.modality_of(["text", "text"]) == "text" and evaluation.modality_of(["text", "image"]) == "mixed"
    assert evaluation.difference(report["overall"], one)["recall@1"] == pytest.approx(2 / 3)


# --- the command --------------------------------------------------------------------------------------
@pytest.fixture
def indexed(runner, tmp_path):
    """The samples plus a note holding a made-up word, indexed; the CSV's folder is the collection's."""
    root = tmp_path / "samples"
    shutil.copytree(ROOT / "samples", root)
    (root / "notes" / "glossary.txt").write_text("A zorblax is a word nobody else uses.\n")
    assert runner("index", str(root), "--json").exit_code == 0
    listing = json.loads(runner("search", "anything", "-k", "100", "--json").stdout)["results"]
    return root, {Path(r["path"]).relative_to(root).as_posix(): r["id"] for r in listing}


def _csv(root: Path, rows: list[str]) -> Path:
    path = root / "queries.csv"
    path.write_text("query,relevant\n" + "".join(f"{row}\n" for row in rows))
    return path


def _search(runner, monkeypatch, root, query: str, hybrid: bool, extra=()) -> list[int]:
    monkeypatch.chdir(root)  # the CSV's folder: its file queries are relative to it
    args = ["search", query, "-k", "10", "--json", *extra] + (["--hybrid"] if hybrid else [])
    result = runner(*args)
    assert result.exit_code == 0, result.stderr
    return [r["id"] for r in json.loads(result.stdout)["results"]]


def test_evaluate_gives_the_figures_of_search_itself(runner, indexed, monkeypatch):
    root, ids = indexed
    apple = ids["photos/red-apple.png"]
    csv_file = _csv(root, [
        f"like:{apple},photos/red-apple.png",  # a single like: puts the item itself first
        "photos/sunset.jpg,photos/sunset.jpg",  # the same file scores 1.0: first
        "zorblax,notes/glossary.txt",  # only that note has the word: hybrid's lexical list puts it first
        f"like:{apple},photos/red-apple.png|notes/recipe.md",  # the apple is first, so the recipe is not: R@1 ½
        f"like:{apple},notes/recipe.md",  # cannot be first: the apple is
        '"a red apple",photos/red-apple.png',  # wherever the random model puts it
    ])
    result = runner("evaluate", str(csv_file), "--hybrid", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["queries"] == 6 and len(document["runs"]) == 1
    run = document["runs"][0]
    per_query = run["per_query"]
    assert [q["recall@1"] for q in per_query[:4]] == [1, 1, 1, 0.5]
    assert [q["mrr"] for q in per_query[:4]] == [1, 1, 1, 1]
    assert per_query[4]["recall@1"] == 0 and per_query[4]["mrr"] < 1
    assert [q["hybrid"] for q in per_query] == [False, False, True, False, False, True]
    assert [(q["query_modality"], q["result_modality"]) for q in per_query] == [
        ("image", "image"), ("image", "image"), ("text", "text"), ("image", "mixed"), ("image", "text"),
        ("text", "image")]
    expected = []
    for row in per_query:  # the same query through `mmsearch search --json`, scored by the metric functions
        ranked = _search(runner, monkeypatch, root, row["query"], row["hybrid"])
        assert row["results"] == ranked
        figures = evaluation.scores(ranked, row["relevant"])
        assert {m: row[m] for m in evaluation.METRICS} == figures
        expected.append((row["query_modality"], row["result_modality"], figures))
    assert run["overall"] == pytest.approx(evaluation.summary(expected)["overall"])
    assert run["by_modality"] == pytest.approx(evaluation.summary(expected)["by_modality"])
    assert run["options"]["hybrid"] is True and run["flags"] == "--fusion early -k 10 --hybrid --alpha 0.5"
    human = runner("evaluate", str(csv_file), "--hybrid")
    assert human.exit_code == 0 and "image → mixed" in human.stdout
    assert human.stdout.splitlines()[3].split()[:3] == ["overall", "6", f"{run['overall']['recall@1']:.3f}"]


def test_compare_runs_two_option_sets_side_by_side(runner, indexed, monkeypatch):
    root, ids = indexed
    csv_file = _csv(root, ["zorblax,notes/glossary.txt", '"a red apple",photos/red-apple.png|photos/sunset.jpg',
                           "photos/sunset.jpg,photos/sunset.jpg"])
    result = runner("evaluate", str(csv_file), "--hybrid", "--compare", "--no-hybrid --fusion rrf -k 20", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    a, b = document["runs"]
    assert (a["options"]["fusion"], a["options"]["hybrid"], a["options"]["k"]) == ("early", True, 10)
    assert (b["options"]["fusion"], b["options"]["hybrid"], b["options"]["k"]) == ("rrf", False, 20)
    for row in b["per_query"]:
        ranked = _search(runner, monkeypatch, root, row["query"], False, ["--fusion", "rrf", "-k", "20"])
        assert row["results"] == ranked[:20]
        assert {m: row[m] for m in evaluation.METRICS} == evaluation.scores(ranked, row["relevant"])
    assert document["difference"]["overall"] == pytest.approx(evaluation.difference(a["overall"], b["overall"]))
    human = runner("evaluate", str(csv_file), "--hybrid", "--compare", "--no-hybrid --fusion rrf -k 20")
    lines = human.stdout.splitlines()
    assert human.exit_code == 0 and lines[1] == f"A: {a['flags']}" and lines[2] == f"B: {b['flags']}"
    overall = lines[5].split()
    assert overall[:5] == ["overall", "3", f"{a['overall']['recall@1']:.3f}", f"{b['overall']['recall@1']:.3f}",
                           f"{b['overall']['recall@1'] - a['overall']['recall@1']:+.3f}"]


def test_stdin_paths_are_relative_to_the_current_folder(runner, indexed, monkeypatch):
    root, _ = indexed
    monkeypatch.chdir(root.parent)
    from click.testing import CliRunner
    from mmsearch.cli import cli
    result = CliRunner().invoke(cli, ["evaluate", "-", "--json"], input="query,relevant\n"
                                "samples/photos/sunset.jpg,samples/photos/sunset.jpg\n",
                                env={"MMSEARCH_DATA_DIR": str(root.parent / "data"), "MMSEARCH_MODEL": "tiny"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["overall"]["recall@1"] == 1


@pytest.mark.parametrize("rows, args, status, message", [
    (["photos/sunset.jpg,photos/nope.jpg"], [], 1, "queries.csv:2: relevant photos/nope.jpg is not in the data dir"),
    (["holiday,notes/holiday.txt", "sunset,"], [], 1, "queries.csv:3: a row needs a query and one or more"),
    (["like:abc,notes/holiday.txt"], [], 1, "queries.csv:2: like: needs an item id"),
    (["photos/none.jpg,notes/holiday.txt"], [], 1, "queries.csv:2: no such file: photos/none.jpg"),
    ([], [], 1, "no queries"),
    (["holiday,notes/holiday.txt"], ["--compare", "--fusion max"], 2, "--compare: Invalid value for '--fusion'"),
    (["holiday,notes/holiday.txt"], ["-k", "5"], 2, "Invalid value for '-k'"),
])
def test_errors_name_the_row(runner, indexed, rows, args, status, message):
    root, _ = indexed
    csv_file = _csv(root, rows)
    result = runner("evaluate", str(csv_file), *args, "--json")
    assert result.exit_code == status
    error = json.loads(result.stdout)["error"]
    assert message in error["message"] and "\n" not in error["message"]
    plain = runner("evaluate", str(csv_file), *args)
    assert plain.exit_code == status and plain.stdout == "" and len(plain.stderr.strip().splitlines()) == 1


def test_a_bad_header_is_one_line(runner, indexed):
    root, _ = indexed
    (root / "bad.csv").write_text("q,answers\nholiday,notes/holiday.txt\n")
    result = runner("evaluate", str(root / "bad.csv"))
    assert result.exit_code == 1 and result.stderr.strip() == (
        f"error: {root / 'bad.csv'}:1: the header must be query,relevant (then any other columns), not 'q,answers'")
