"""The evaluate command: a CSV of queries and the items that should answer them, run through the real
search, scored as recall@1/5/10, MRR and nDCG@10 overall and per query modality → result modality; with
--compare, a second option set on the same queries, side by side."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from mmsearch.errors import MMSearchError
from mmsearch.search.request import FUSIONS, INDEXES, MAX_K

from .app import EMPTY, MODALITY, Context, cli, command, passive_openmp
from .searching import absolute_prefix

# the search options an option set takes: on the command itself (set A) and in --compare's string (set B)
OPTIONS: list[Callable] = [
    click.option("-k", "--top-k", "k", type=click.IntRange(10, MAX_K), default=10, show_default=True,
                 help="How deep each search goes (at least 10: R@10 and nDCG@10 look that far; MRR counts "
                      "the first relevant item within k)."),
    click.option("--fusion", type=click.Choice(FUSIONS), default="early", show_default=True,
                 help="As search's --fusion."),
    click.option("--rrf-k", type=click.IntRange(1), default=60, show_default=True),
    click.option("--index", "index_name", type=click.Choice(INDEXES), help="As search's --index."),
    click.option("--hybrid/--no-hybrid", default=False, help="Also rank the words by full-text search."),
    click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="With --hybrid: the vector ranking's weight."),
    click.option("--modality", "modalities", type=MODALITY, multiple=True, help="Only these modalities."),
    click.option("--path-prefix", help="Only items whose path starts with this."),
    click.option("--glob", "path_glob", help="Only items whose path matches this glob."),
    click.option("--tag", "tags", multiple=True, help="Only items tagged with this label (repeatable)."),
    click.option("--tag-set", help="Only this tag set's tags count (a name that is no set's is an error)."),
]
NAMES = ("k", "fusion", "rrf_k", "index_name", "hybrid", "alpha", "modalities", "path_prefix", "path_glob", "tags",
         "tag_set")
HEAD = ("R@1", "R@5", "R@10", "MRR", "nDCG@10")


def _with_options(fn: Callable) -> Callable:
    for option in reversed(OPTIONS):
        fn = option(fn)
    return fn


@click.command("--compare")
@_with_options
def _second(**_kwargs: Any) -> None:
    """Only parses --compare's string: the same option definitions as set A's."""


@dataclass
class Row:
    line: int
    query: str
    relevant: list[int]  # item ids


@cli.command()
@click.argument("queries_csv", metavar="QUERIES.csv", required=False)
@_with_options
@click.option("--compare", "compare", metavar='"OPTIONS"',
              help='A second option set, run on the same queries and shown beside the first: e.g. '
                   '"--fusion rrf --hybrid". Options it leaves out keep the first set\'s values.')
@click.option("--labels", "labels_csv", metavar="LABELS.csv", help="Instead of queries: score a tag set against "
              "these labels (path,label rows, as train-classifier reads them): accuracy, macro-F1, per-class "
              "precision/recall, confusion matrix.")
@click.option("--set", "labels_set", metavar="NAME", help="With --labels: the tag set (needed when there are several).")
@command
def evaluate(ctx: Context, queries_csv: str | None, compare: str | None, labels_csv: str | None,
             labels_set: str | None, **options: Any) -> None:
    """Score search on QUERIES.csv (columns query,relevant; '-' reads stdin): recall@1/5/10, MRR and
    nDCG@10, overall and per query → result modality. With --labels, score a tag set instead."""
    if (queries_csv is None) == (labels_csv is None):
        raise click.UsageError("give QUERIES.csv, or --labels LABELS.csv (not both)")
    if labels_csv is not None:
        from .tagging import evaluate_labels
        return evaluate_labels(ctx, labels_csv, labels_set)
    passive_openmp()
    from mmsearch.search import evaluation
    sets = [_options(options)]
    if compare is not None:
        sets.append(_compared(options, compare))
    base, rows = _read(queries_csv)
    library = ctx.library(existing=True)
    if not library.store.counts()["items"]:
        raise MMSearchError(EMPTY)
    for option_set in sets:  # an unknown --tag-set is one error up front, not a prefix on every query's
        if option_set["tag_set"] is not None:
            library.store.tags.check(option_set["tag_set"])
    queries = [_resolve(library, base, queries_csv, row) for row in rows]
    runs = []
    for option_set in sets:
        scored = [_score(ctx, library, base, queries_csv, row, request_options, evaluation)
                  for row, request_options in ((row, _request_options(option_set)) for row in queries)]
        per_query = [entry for entry, _ in scored]
        runs.append({"options": _request_options(option_set), "flags": _flags(option_set),
                     **evaluation.summary([(e["query_modality"], e["result_modality"], s) for e, s in scored]),
                     "per_query": per_query})
    document: dict[str, Any] = {"file": queries_csv, "queries": len(queries), "runs": runs}
    if len(runs) == 2:
        document["difference"] = {"overall": evaluation.difference(runs[0]["overall"], runs[1]["overall"])}
    ctx.emit(document, _table)


def _options(raw: dict[str, Any]) -> dict[str, Any]:
    out = {name: raw[name] for name in NAMES}
    out["modalities"], out["tags"] = list(out["modalities"]), list(out["tags"])
    out["path_prefix"] = absolute_prefix(out["path_prefix"])
    return out


def _compared(first: dict[str, Any], text: str) -> dict[str, Any]:
    """Set B: set A's options, those named in --compare's string replaced (bad options: a usage error)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise click.UsageError(f"--compare: cannot split {text!r}: {exc}") from None
    try:
        parsed = _second.make_context("--compare", words)
    except click.UsageError as exc:
        raise click.UsageError(f"--compare: {exc.format_message()}", click.get_current_context()) from None
    given = {name: parsed.params[name] for name in NAMES
             if parsed.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    return _options({**first, **given})


def _request_options(option_set: dict[str, Any]) -> dict[str, Any]:
    options = {"k": option_set["k"], "modality": option_set["modalities"], "fusion": option_set["fusion"],
               "rrf_k": option_set["rrf_k"], "index": option_set["index_name"], "hybrid": option_set["hybrid"],
               "alpha": option_set["alpha"], "path_prefix": option_set["path_prefix"],
               "path_glob": option_set["path_glob"], "tags": option_set["tags"] or None,
               "tag_set": option_set["tag_set"]}
    return {key: value for key, value in options.items() if value is not None}


def _read(name: str) -> tuple[str, list[tuple[int, str, list[str]]]]:
    """The CSV's folder (paths in it are relative to it; stdin's: the current folder) and its rows:
    (line, query, relevant paths split on |)."""
    try:
        if name == "-":
            text, base = sys.stdin.read(), os.getcwd()
        else:
            with open(os.path.expanduser(name), encoding="utf-8-sig", newline="") as handle:
                text = handle.read()
            base = os.path.dirname(os.path.abspath(os.path.expanduser(name)))
    except OSError as exc:
        raise MMSearchError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise MMSearchError(f"{name} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [cell.strip() for cell in next(reader, [])]
        if header[:2] != ["query", "relevant"]:
            raise MMSearchError(f"{name}:1: the header must be query,relevant (then any other columns), not "
                                f"{','.join(header)[:80]!r}")
        rows = []
        for cells in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) < 2 or not cells[0].strip() or not cells[1].strip():
                raise MMSearchError(f"{name}:{line}: a row needs a query and one or more relevant paths (a|b)")
            paths = [path.strip() for path in cells[1].split("|")]
            if not all(paths):
                raise MMSearchError(f"{name}:{line}: an empty relevant path (paths are separated by |)")
            rows.append((line, cells[0].strip(), paths))
    except csv.Error as exc:
        raise MMSearchError(f"{name}:{reader.line_num}: not CSV: {exc}") from None
    if not rows:
        raise MMSearchError(f"{name}: no queries (a header query,relevant, then one row per query)")
    return base, rows


def _resolve(library: Any, base: str, name: str, row: tuple[int, str, list[str]]) -> Row:
    """The relevant paths as item ids: each must be an indexed item, else an error naming the row."""
    from mmsearch.search.tables import FAILED
    line, query, paths = row
    ids = []
    for path in paths:
        full = os.path.abspath(os.path.join(base, os.path.expanduser(path)))
        items = library.store.items_by_id(library.store.ids_under(full)).values()
        item = next((item for item in items if item.path == full), None)
        if item is None:
            raise MMSearchError(f"{name}:{line}: relevant {path} is not in the data dir ({full})")
        if item.status == FAILED:
            raise MMSearchError(f"{name}:{line}: relevant {path} failed to index: it can never be found")
        ids.append(item.id)
    return Row(line, query, ids)


def _score(ctx: Context, library: Any, base: str, name: str, row: Row, options: dict[str, Any],
           evaluation: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """One query searched as `search` would (image and sound paths relative to the CSV's folder); --hybrid
    only where the query has words to look up (a like: or file query runs without it)."""
    from mmsearch.search.parse import build
    from mmsearch.search.request import Limits
    hybrid = options.get("hybrid", False)
    try:
        with contextlib.chdir(base):
            request = build({**options, "text": row.query, "hybrid": False}, (), allow_files=True,
                            limits=Limits.of(ctx.settings))
        hybrid = hybrid and any(p.kind == "text" and p.weight > 0 for p in request.parts)  # words to look up
        request = dataclasses.replace(request, hybrid=hybrid)
        response = library.search(request)
    except MMSearchError as exc:
        raise type(exc)(f"{name}:{row.line}: {exc}") from None
    ranked = [hit.id for hit in response.results]
    kinds = library.store.items_by_id({p.value for p in request.parts if p.kind == "item"})
    query_modality = evaluation.modality_of(
        kinds[p.value].modality if p.kind == "item" and p.value in kinds else p.kind for p in request.parts)
    relevant = library.store.items_by_id(row.relevant)
    result_modality = evaluation.modality_of(item.modality for item in relevant.values())
    figures = evaluation.scores(ranked, row.relevant)
    entry = {"line": row.line, "query": row.query, "relevant": row.relevant, "query_modality": query_modality,
             "result_modality": result_modality, "hybrid": hybrid, "ranks": evaluation.ranks(ranked, row.relevant),
             "results": ranked, **figures}
    return entry, figures


def _flags(option_set: dict[str, Any]) -> str:
    """An option set as the flags that give it."""
    words = [f"--fusion {option_set['fusion']}", f"-k {option_set['k']}"]
    if option_set["fusion"] != "early":
        words.append(f"--rrf-k {option_set['rrf_k']}")
    if option_set["index_name"]:
        words.append(f"--index {option_set['index_name']}")
    if option_set["hybrid"]:
        words.append(f"--hybrid --alpha {option_set['alpha']:g}")
    words += [f"--modality {m}" for m in option_set["modalities"]]
    words += [f"--tag {shlex.quote(t)}" for t in option_set["tags"]]
    for flag, key in (("--path-prefix", "path_prefix"), ("--glob", "path_glob"), ("--tag-set", "tag_set")):
        if option_set[key]:
            words.append(f"{flag} {shlex.quote(option_set[key])}")
    return " ".join(words)


def _groups(run: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("overall", run["overall"])] + [(f"{g['query']} → {g['result']}", g) for g in run["by_modality"]]


def _table(document: dict[str, Any]) -> str:
    from mmsearch.search.evaluation import METRICS
    runs = document["runs"]
    lines = [f"{document['queries']} queries from {document['file']}"]
    if len(runs) == 1:
        lines.append(f"options: {runs[0]['flags']}")
        lines.append(f"{'':<18}{'queries':>8}" + "".join(f"{h:>9}" for h in HEAD))
        for label, group in _groups(runs[0]):
            lines.append(f"{label:<18}{group['queries']:>8}" + "".join(f"{group[m]:>9.3f}" for m in METRICS))
        return "\n".join(lines)
    lines += [f"A: {runs[0]['flags']}", f"B: {runs[1]['flags']}"]
    lines.append(f"{'':<18}{'':>8}" + "".join(f"{h:^24}" for h in HEAD))
    lines.append(f"{'':<18}{'queries':>8}" + "".join(f"{'A':>8}{'B':>8}{'B−A':>8}" for _ in HEAD))
    second = dict(_groups(runs[1]))
    for label, a in _groups(runs[0]):
        b = second[label]
        lines.append(f"{label:<18}{a['queries']:>8}" +
                     "".join(f"{a[m]:>8.3f}{b[m]:>8.3f}{b[m] - a[m]:>+8.3f}" for m in METRICS))
    return "\n".join(lines)
