"""Commands that recognise: classify (zero-shot tags from a list of labels), train-classifier (a model
fitted on a person's labels, applied as tags) and tags (the stored sets)."""
from __future__ import annotations

import os
from typing import Any

import click

from mmsearch.errors import MMSearchError

from .app import EMPTY, MODALITY, Context, cli, command

FUSION = click.Choice(["concat", "mean", "attention"])


def _default_name(path: str, fallback: str) -> str:
    """The file's name without its extension when it is a valid set name (tagging.NAME), else ``fallback``."""
    from mmsearch.tagging import NAME
    stem = os.path.splitext(os.path.basename(path))[0] if path != "-" else ""
    return stem if NAME.match(stem) else fallback


def _labels_line(labels: dict[str, int], most: int = 8) -> str:
    shown = sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{label} {count}" for label, count in shown[:most])
    return text + (f", … {len(shown) - most} more" if len(shown) > most else "")


def _document(report: Any) -> dict[str, Any]:
    out = {"set": report.name, "kind": report.kind, "items": report.items, "tags": report.tags,
           "labels": report.labels, "seconds": round(report.seconds, 3)}
    if report.figures:
        out.update({"fusion": report.fusion, "cross_validation": report.figures, "model": report.model})
    return out


def _nonempty(library: Any) -> None:
    if not library.store.counts()["items"]:
        raise MMSearchError(EMPTY)


@cli.command()
@click.argument("labels_file", metavar="LABELS.txt")
@click.option("--modality", "modalities", type=MODALITY, multiple=True, help="Only tag items of these modalities.")
@click.option("--top", type=click.IntRange(1, 100), default=1, show_default=True, help="Labels kept per item.")
@click.option("--min-score", type=click.FloatRange(-1, 1), help="Keep only labels scoring at least this (cosine); "
              "an item none reaches gets no tag. Default: every item gets its top labels.")
@click.option("--name", help="The tag set's name (default: the labels file's name without its extension).")
@command
def classify(ctx: Context, labels_file: str, modalities: tuple[str, ...], top: int, min_score: float | None,
             name: str | None) -> None:
    """Tag every item with the labels of LABELS.txt (one per line) that its vectors are nearest, each label
    scored through prompt templates for the item's modality (setting tag_templates). Replaces the set."""
    from mmsearch.labels import read_label_list
    labels = read_label_list(labels_file)
    library = ctx.library(existing=True)
    _nonempty(library)
    report = library.classify(labels, name or _default_name(labels_file, "zero-shot"), list(modalities) or None,
                              top, min_score)
    ctx.emit(_document(report), lambda d: f"tagged {d['items']} items in set {d['set']!r} ({d['tags']} tags, "
             f"{d['seconds']:.1f}s): {_labels_line(d['labels'])}")


@cli.command("train-classifier")
@click.argument("labels_csv", metavar="LABELS.csv")
@click.option("--name", help="The tag set's (and model's) name (default: the CSV's name without its extension).")
@click.option("--fusion", type=FUSION, help="How an item's vectors are combined: concat (side by side), mean "
              "(their weighted mean) or attention (a learned weighting). Default: the best cross-validated one.")
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True, help="Cross-validation folds.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="Multi-label data: the probability a label needs to be tagged.")
@command
def train_classifier(ctx: Context, labels_csv: str, name: str | None, fusion: str | None, folds: int,
                     threshold: float) -> None:
    """Fit a classifier on the stored vectors of the items in LABELS.csv (path,label rows; several rows for
    several labels; a header, if any, exactly path,label: a first row that is neither that nor an indexed
    item's is refused as a bad header), compare the three fusions by cross-validation, save the chosen one
    in the data dir and tag every item with it (new items are tagged as they are indexed)."""
    from mmsearch.labels import read_labelled
    library = ctx.library(existing=True)
    _nonempty(library)
    labelled = read_labelled(labels_csv, {row[1]: row[0] for row in library.store.index_rows()})
    log = (lambda _line: None) if ctx.as_json else (lambda line: click.echo(line, err=True))
    report = library.train_classifier(labelled, name or _default_name(labels_csv, "classifier"), fusion, folds,
                                      threshold, log)
    ctx.emit(_document(report), _trained)


def _trained(d: dict[str, Any]) -> str:
    lines = [f"{'fusion':<10}{'accuracy':>10}{'macro-F1':>10}"]
    lines += [f"{f:<10}{m['accuracy']:>10.3f}{m['macro_f1']:>10.3f}" + ("  ← chosen" if f == d["fusion"] else "")
              for f, m in d["cross_validation"].items()]
    lines.append(f"saved {d['model']}.safetensors; tagged {d['items']} items in set {d['set']!r}: "
                 f"{_labels_line(d['labels'])}")
    return "\n".join(lines)


@cli.command()
@click.option("--delete", "delete", metavar="NAME", help="Delete this tag set (and its trained model).")
@command
def tags(ctx: Context, delete: str | None) -> None:
    """The stored tag sets: their kind, items and label counts."""
    library = ctx.library(existing=True)
    if delete is not None:
        if not library.delete_tag_set(delete):
            raise MMSearchError(f"no tag set {delete!r}")
        ctx.emit({"deleted": delete}, lambda d: f"deleted tag set {d['deleted']!r}")
        return
    from mmsearch.search.results import tag_sets_document
    ctx.emit(tag_sets_document(library.store.tags.sets()), lambda d: "\n".join(
        f"{s['name']} ({s['kind']}, {s['items']} items): "
        f"{_labels_line({x['label']: x['count'] for x in s['labels']})}" for s in d["sets"]) or "no tag sets")


def evaluate_labels(ctx: Context, labels_csv: str, name: str | None) -> None:
    """evaluate --labels: a tag set's tags against LABELS.csv."""
    from mmsearch import tagging
    from mmsearch.labels import read_labelled
    library = ctx.library(existing=True)
    _nonempty(library)
    labelled = read_labelled(labels_csv, {row[1]: row[0] for row in library.store.index_rows()})  # the file first
    sets = [s.name for s in library.store.tags.sets()]
    if name is None:
        if len(sets) != 1:
            raise MMSearchError("name the tag set to evaluate with --set: " + (", ".join(sets) or "there is none"))
        name = sets[0]
    ctx.emit(tagging.evaluate(library, labelled, name), _report)


def _report(d: dict[str, Any]) -> str:
    lines = [f"set {d['set']!r} on {d['items']} labelled items: accuracy {d['accuracy']:.3f}, macro-F1 "
             f"{d['macro_f1']:.3f}" + (f", {d['untagged']} untagged" if d["untagged"] else "")]
    width = max(len(label) for label in d["labels"])
    lines.append(f"{'label':<{width}}{'precision':>11}{'recall':>9}{'support':>9}")
    for label in d["labels"]:
        c = d["per_class"][label]
        lines.append(f"{label:<{width}}{c['precision']:>11.3f}{c['recall']:>9.3f}{c['support']:>9}")
    if d.get("confusion") is not None:
        number = len(str(len(d["labels"]) - 1))
        lines.append("confusion: rows are the labels, columns the tags; column N is the label of row N")
        lines.append(" " * (number + 1 + width) + "".join(f"{n:>6}" for n in range(len(d["labels"]))))
        lines += [f"{n:>{number}} {label:<{width}}" + "".join(f"{v:>6}" for v in row)
                  for n, (label, row) in enumerate(zip(d["labels"], d["confusion"]))]
    return "\n".join(lines)
