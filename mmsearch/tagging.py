"""Tag sets: zero-shot labels and trained classifiers applied to the stored vectors (nothing is embedded
again but the labels' words), written to SQL as one named tag set each; after an index run the items it
added or changed are tagged by every set the same way (the set's config says how).

The models live in mmsearch.encoders (views, zero_shot, classifiers); the tags in mmsearch.search.tags.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mmsearch.search.fusion import content_vector
from mmsearch.search.tables import CAPTION, OK, item_of

from .errors import MMSearchError
from .labels import Labelled

ZERO_SHOT, TRAINED = "zero-shot", "trained"
CLASSIFIERS = "classifiers"  # the data dir's folder of trained classifiers: NAME.safetensors + NAME.json
CHUNK = 8192  # items read, scored and written per step: memory stays flat however large the collection
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a set's name is also its model's file name
VIEW_OF = {"image": "image", "audio": "audio", "text": "text"}  # an item's content vector: its modality's view


@dataclass
class TagReport:
    name: str
    kind: str
    items: int = 0
    tags: int = 0
    seconds: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)  # label → items given it in this run
    figures: dict[str, Any] = field(default_factory=dict)  # train-classifier: cross-validated, per fusion
    model: str | None = None
    fusion: str | None = None
    tagged: set[int] = field(default_factory=set)  # the items given a tag in this run


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise MMSearchError(f"tag set name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                            "letter or digit")
    return name


def _same_kind(store: Any, name: str, kind: str) -> None:
    """Running classify or train-classifier again replaces its own set, never one the other command made."""
    held = store.tags.get(name)
    if held is not None and held.kind != kind:
        raise MMSearchError(f"tag set {name!r} is a {held.kind} set: pick another --name, or delete it first "
                            f"('mmsearch tags --delete {name}')")


def candidates(store: Any, modalities: Iterable[str] | None = None) -> dict[int, str]:
    """The items a set can tag (ok ones, so with vectors): id → modality."""
    wanted = set(modalities) if modalities else None
    return {row[0]: row[2] for row in store.index_rows()
            if row[6] == OK and (wanted is None or row[2] in wanted)}


def views_of(store: Any, ids: Sequence[int], modality: dict[int, str]):
    """The classifiers' input for these items: each one's content vector as its modality's view (a long
    note's: the mean of its passages, fusion.content_vector) and its caption."""
    from mmsearch.encoders.views import views_from
    own = store.part_vectors(list(ids))
    rows = []
    for item in ids:
        stored = own.get(int(item), ())
        found = {VIEW_OF[modality[int(item)]]: content_vector(stored)}
        found["caption"] = next((row.vector for row in stored if row.kind == CAPTION), None)
        rows.append({view: vector for view, vector in found.items() if vector is not None})
    return views_from(rows, store_dim(own))


def store_dim(own: dict) -> int:
    for rows in own.values():
        for row in rows:
            return len(row.vector)
    raise MMSearchError("these items have no stored vectors")


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    ids = list(ids)
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def _count(report: TagReport, rows: list[tuple[int, str, float]]) -> None:
    report.tags += len(rows)
    for item, label, _score in rows:
        report.labels[label] = report.labels.get(label, 0) + 1
        report.tagged.add(item)


# --- zero-shot ----------------------------------------------------------------------------------------
def zero_shot(library: Any, labels: list[str], name: str, modalities: Sequence[str] | None = None, top: int = 1,
              min_score: float | None = None, ids: Sequence[int] | None = None) -> TagReport:
    """Score the items (``ids``: only these, else all of ``modalities``) against every label's prompt
    ensemble for their modality and keep each item's top labels (cosines) as the tag set ``name``."""
    from mmsearch.encoders.zero_shot import label_vectors, top_labels
    check_name(name)
    store, started = library.store, time.perf_counter()
    if ids is None:
        _same_kind(store, name, ZERO_SHOT)
    report = TagReport(name, ZERO_SHOT)
    templates = library.settings.tag_templates
    generation = store.generation()
    modality = candidates(store, modalities)
    chosen = list(modality) if ids is None else [int(i) for i in ids if int(i) in modality]
    encoder = library.encoder()
    anchors = {m: label_vectors(encoder.encode_texts, labels, templates[m]) for m in set(modality.values())}
    weights = library.settings.modality_weights
    written: list[tuple[int, str, float]] = []
    for chunk in _chunks(chosen):
        vectors = store.item_vectors(chunk, weights)
        for kind in anchors:
            members = [i for i in chunk if modality[i] == kind and i in vectors]
            if not members:
                continue
            scores = np.stack([vectors[i] for i in members]) @ anchors[kind].T
            for item, best in zip(members, top_labels(scores, top, min_score)):
                written += [(item, labels[j], float(s)) for j, s in best]
                report.items += 1
    config = {"labels": labels, "modalities": sorted(set(modality.values())), "top": top, "min_score": min_score,
              "templates": templates, "model": library.models.stored(), "generation": generation}
    store.tags.replace(name, ZERO_SHOT, config, written, items=chosen if ids is not None else None)
    _count(report, written)
    report.seconds = time.perf_counter() - started
    return report


# --- trained classifiers ------------------------------------------------------------------------------
def model_stem(library: Any, name: str) -> Path:
    return Path(library.data_path) / CLASSIFIERS / check_name(name)


def train(library: Any, labelled: Labelled, name: str, fusion: str | None = None, folds: int = 5,
          threshold: float = 0.5, log: Callable[[str], None] = lambda _: None) -> TagReport:
    """Cross-validate every fusion on the labelled items' stored vectors, fit the chosen one (``fusion``, else
    the best macro-F1) on all of them, save it, and tag every item with it as the set ``name``."""
    from mmsearch.encoders.classifier_training import best_fusion, cross_validate, train as fit
    from mmsearch.encoders.classifiers import FUSIONS
    check_name(name)
    _same_kind(library.store, name, TRAINED)
    started = time.perf_counter()
    modality = candidates(library.store)
    missing = [int(i) for i in labelled.ids if int(i) not in modality]
    if missing:
        raise MMSearchError(f"{len(missing)} labelled items have no vectors yet (not indexed, or failed): "
                            f"run 'index' first (item {missing[0]})")
    views = views_of(library.store, labelled.ids, modality)
    figures: dict[str, Any] = {}
    for candidate in FUSIONS:
        try:
            figures[candidate] = cross_validate(views, labelled.targets, labelled.labels, candidate, folds=folds)
        except ValueError as exc:  # too few items of a class to cross-validate
            raise MMSearchError(f"cannot cross-validate: {exc}") from None
        log(f"{candidate:>9}: accuracy {figures[candidate]['accuracy']:.3f}, macro-F1 "
            f"{figures[candidate]['macro_f1']:.3f} ({figures[candidate]['folds']}-fold)")
    chosen = fusion or best_fusion(figures)
    model = fit(views, labelled.targets, labelled.labels, chosen, threshold=threshold)
    stem = model_stem(library, name)
    model.save(stem)
    report = apply_model(library, name, model, stem, modality=modality)
    report.figures, report.fusion = figures, chosen
    report.seconds = time.perf_counter() - started
    return report


def apply_model(library: Any, name: str, model: Any, stem: Path, ids: Sequence[int] | None = None,
                modality: dict[int, str] | None = None) -> TagReport:
    """Tag the items (``ids``, else all) with the classifier's predicted labels as the set ``name``;
    ``modality``: candidates() when the caller has just read it."""
    store, started = library.store, time.perf_counter()
    report = TagReport(name, TRAINED, model=str(stem))
    generation = store.generation()
    modality = candidates(store) if modality is None else modality
    chosen = list(modality) if ids is None else [int(i) for i in ids if int(i) in modality]
    written: list[tuple[int, str, float]] = []
    for chunk in _chunks(chosen):
        for item, predicted in zip(chunk, model.predict(views_of(store, chunk, modality))):
            written += [(item, model.labels[j], float(s)) for j, s in predicted]
            report.items += 1
    config = {"model": stem.name, "fusion": model.fusion, "labels": list(model.labels), "generation": generation}
    store.tags.replace(name, TRAINED, config, written, items=chosen if ids is not None else None)
    _count(report, written)
    report.seconds = time.perf_counter() - started
    return report


def load_model(library: Any, name: str):
    from mmsearch.encoders.classifiers import Classifier
    return Classifier.load(model_stem(library, name))


# --- after an index run -------------------------------------------------------------------------------
def changed_since(store: Any, generation: int) -> list[int]:
    """Items with a vector written after ``generation``: added or re-embedded since a set last tagged."""
    changed: set[int] = set()
    for vector_ids, _vectors in store.iter_vectors(since_generation=generation):
        changed.update(int(i) for i in np.unique(item_of(vector_ids)))
    return sorted(changed)


def tag_changed(library: Any, problems: list[str] | None = None) -> list[TagReport]:
    """Tag what an index run added or changed with every stored set, each the way it was made. A set that
    cannot (its model's files gone or damaged, vectors of another size) is skipped and named in
    ``problems``: the run's own work is committed and stays."""
    reports = []
    for tag_set in library.store.tags.sets():
        config = tag_set.config
        changed = changed_since(library.store, int(config.get("generation", 0)))
        if not changed:
            continue
        try:
            if tag_set.kind == ZERO_SHOT:
                if config.get("model") != library.models.stored():
                    continue  # labels scored by another model; classify again to re-tag everything
                reports.append(zero_shot(library, list(config["labels"]), tag_set.name, config.get("modalities"),
                                         int(config.get("top", 1)), config.get("min_score"), ids=changed))
            elif tag_set.kind == TRAINED:
                stem = model_stem(library, tag_set.name)
                reports.append(apply_model(library, tag_set.name, load_model(library, tag_set.name), stem, changed))
        except (MMSearchError, ValueError, KeyError, TypeError) as exc:
            if problems is None:
                raise
            problems.append(f"tag set {tag_set.name!r} did not tag the {len(changed)} new or changed items: "
                            f"{exc}; train or classify it again, or 'mmsearch tags --delete {tag_set.name}'")
    return reports


# --- evaluation ---------------------------------------------------------------------------------------
def evaluate(library: Any, labelled: Labelled, name: str) -> dict[str, Any]:
    """A tag set's tags against a person's labels: accuracy, macro-F1, per-class precision/recall and the
    confusion matrix (mmsearch.encoders.classifier_metrics). Single-label data compares each item's best
    tag; multi-label data its whole set of tags."""
    from mmsearch.encoders.classifier_metrics import classification_report
    tag_set = library.store.tags.get(library.store.tags.check(name))
    tags = library.store.tags.of([int(i) for i in labelled.ids])
    labels = list(labelled.labels) + sorted(set(tag_set.labels) - set(labelled.labels))
    column = {label: n for n, label in enumerate(labels)}
    truth = np.zeros((len(labelled.ids), len(labels)), bool)
    truth[:, :len(labelled.labels)] = labelled.targets
    predicted = np.zeros_like(truth)
    for row, item in enumerate(labelled.ids):
        own = [tag for tag in tags.get(int(item), []) if tag.set == name]
        chosen = own if labelled.multi_label else own[:1]  # of() lists each item's tags best first
        predicted[row, [column[tag.label] for tag in chosen]] = True
    report = classification_report(truth, predicted, labels)
    report["set"], report["items"], report["labels"] = name, len(labelled.ids), labels
    report["untagged"] = int((~predicted.any(axis=1)).sum())
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in report.items()}
