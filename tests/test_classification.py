"""Recognition over the shared space, measured: zero-shot tags and trained classifiers (the three fusions)
on a generated labelled collection, against chance, with the figures printed (-s).

The collection: pictures whose class is colour × shape (12 classes), faded and noisy (a condition the
model never trained on, so the picture alone is not enough: measured 0.73 held-out with the image alone,
1.0 on clean pictures), half of them captioned with one of their two attributes ("red", "a circle"), and
sounds of four classes. `tiny` is trained here on coloured
shapes (tests/shapes.py), the audio tower with train-audio on other clips of the ten generated sound
classes (tests/sounds.py). Held-out items use seeds nobody trained on and are never labelled for training.
"""
from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch import tagging
from mmsearch.labels import read_labelled
from mmsearch.library import Library
from mmsearch.settings import load_settings

from .shapes import COLOURS, HELD_OUT, SHAPES, picture
from .sounds import CLASSES as SOUND_CLASSES, make_training_set, sound, write_wav

SOUNDS = ("a low pitched hum", "hissing white noise", "fast clicking", "a rising siren")
TRAIN, HELD = 16, 8  # items of each class labelled for training; held out
PICTURE_CLASSES = [f"{c} {s}" for c, s in itertools.product(COLOURS, SHAPES)]


FADE, NOISE = 0.6, 30  # blended 60 % toward grey, then Gaussian noise of this many levels


def _faded(colour: str, shape: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.asarray(picture(colour, shape, seed), np.float64) * (1 - FADE) + 128 * FADE
    return Image.fromarray(np.clip(pixels + rng.normal(0, NOISE, pixels.shape), 0, 255).astype(np.uint8))


def _collection(root: Path, per_class: int, seed: int, start: int = 0) -> dict[str, str]:
    """Pictures (half captioned with one attribute) and sounds; path → class."""
    truth = {}
    root.mkdir(parents=True, exist_ok=True)
    for n, (colour, shape) in enumerate(itertools.product(COLOURS, SHAPES)):
        for k in range(start, start + per_class):
            path = root / f"{colour}_{shape}_{k}.png"
            _faded(colour, shape, seed + n * 1000 + k).save(path)
            if k % 2 == 0:  # half captioned, with one of the two attributes
                path.with_suffix(".txt").write_text(colour if (k // 2) % 2 == 0 else f"a {shape}")
            truth[str(path)] = f"{colour} {shape}"
    for n, kind in enumerate(SOUNDS):
        for k in range(start, start + per_class):
            path = root / f"sound_{n}_{k}.wav"
            write_wav(path, sound(kind, seed + 50_000 + n * 1000 + k))
            truth[str(path)] = kind
    return truth


def _labels_csv(path: Path, truth: dict[str, str]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(sorted(truth.items()))
    return path


@pytest.fixture(scope="module")
def labelled(shapes_model, tmp_path_factory):
    from mmsearch.encoders.audio_training import TrainOptions
    root = tmp_path_factory.mktemp("classes")
    settings = load_settings({"data_dir": str(root / "data"), "model": "tiny", "pretrained": str(shapes_model[0]),
                              "batch_size": 16, "tag_templates": json.dumps({"image": ["a {}"], "audio": ["{}"]})},
                             env={})
    library = Library(settings)
    # the audio tower trained on the ten generated sound classes (other clips than the collection's)
    report = library.train_audio(str(make_training_set(root / "audio-train", per_class=8)),
                                 TrainOptions(epochs=10, patience=4, time_limit=120))
    print(f"audio tower: {len(report.epochs)} epochs, val R@1 {report.best_r1:.3f} (chance {report.chance_r1:.3f})")
    train = _collection(root / "train", TRAIN, seed=0)
    held = _collection(root / "held", HELD, seed=HELD_OUT)
    report = library.run_index([str(root / "train"), str(root / "held")])
    assert report.failed == 0 and report.added == len(train) + len(held), report
    return library, root, train, held


def _accuracy(library, truth: dict[str, str], name: str, only=lambda path: True) -> float:
    ids = {row[1]: row[0] for row in library.store.index_rows()}
    chosen = {path: label for path, label in truth.items() if only(path)}
    tags = library.store.tags.of([ids[p] for p in chosen])
    right = [next((t.label for t in tags.get(ids[p], []) if t.set == name), None) == label
             for p, label in chosen.items()]
    return float(np.mean(right))


def test_zero_shot_tags_beat_chance_three_times_on_held_out_pictures(labelled, tmp_path):
    library, _root, _train, held = labelled
    report = library.classify(PICTURE_CLASSES, "shapes", modalities=["image"])
    pictures = {p: c for p, c in held.items() if p.endswith(".png")}
    assert report.items == len(_train) + len(held) - len(SOUNDS) * (TRAIN + HELD)  # every picture, one tag each
    accuracy = _accuracy(library, pictures, "shapes")
    chance = 1 / len(PICTURE_CLASSES)
    print(f"zero-shot on {len(pictures)} held-out pictures: top-1 {accuracy:.3f} (chance {chance:.3f})")
    assert accuracy >= 3 * chance
    tags = library.store.tags.of([row[0] for row in library.store.index_rows()])
    sounds = [row[0] for row in library.store.index_rows() if row[2] == "audio"]
    assert not any(t.set == "shapes" for i in sounds for t in tags.get(i, []))  # --modality image only
    # the same figure from evaluate --labels' report
    labels = read_labelled(str(_labels_csv(tmp_path / "held.csv", pictures)),
                           {row[1]: row[0] for row in library.store.index_rows()})
    evaluated = tagging.evaluate(library, labels, "shapes")
    assert evaluated["accuracy"] == pytest.approx(accuracy)


def test_zero_shot_tags_beat_chance_three_times_on_held_out_sounds(labelled):
    library, _root, _train, held = labelled
    labels = list(SOUND_CLASSES)  # all ten classes the tower knows, four of them in the collection
    library.classify(labels, "sounds", modalities=["audio"])
    sounds = {p: c for p, c in held.items() if p.endswith(".wav")}
    accuracy = _accuracy(library, sounds, "sounds")
    chance = 1 / len(labels)
    print(f"zero-shot on {len(sounds)} held-out sounds: top-1 {accuracy:.3f} (chance {chance:.3f})")
    assert accuracy >= 3 * chance


@pytest.mark.parametrize("fusion", ["concat", "mean", "attention"])
def test_each_fusion_beats_chance_three_times_on_held_out_items(labelled, tmp_path, fusion):
    library, _root, train, held = labelled
    labels = read_labelled(str(_labels_csv(tmp_path / "train.csv", train)),
                           {row[1]: row[0] for row in library.store.index_rows()})
    report = library.train_classifier(labels, f"trained-{fusion}", fusion=fusion, folds=4)
    assert set(report.figures) == {"concat", "mean", "attention"} and report.fusion == fusion
    classes = len(PICTURE_CLASSES) + len(SOUNDS)
    chance = 1 / classes
    accuracy = _accuracy(library, held, f"trained-{fusion}")
    print(f"{fusion}: cross-validated " + ", ".join(f"{f} {m['accuracy']:.3f}" for f, m in report.figures.items())
          + f"; held-out accuracy {accuracy:.3f} (chance {chance:.3f})")
    assert accuracy >= 3 * chance
    assert report.figures[fusion]["accuracy"] >= 3 * chance
    assert (Path(library.data_path) / "classifiers" / f"trained-{fusion}.safetensors").is_file()


def test_concat_and_attention_are_at_least_as_good_as_the_image_alone_where_there_is_a_caption(labelled):
    """On held-out captioned pictures: a classifier that also reads the caption (concat, attention) is at
    least as accurate as the same classifier fitted on the image vectors alone."""
    from mmsearch.encoders.classifier_training import train as fit
    library, _root, train, held = labelled
    ids = {row[1]: row[0] for row in library.store.index_rows()}
    modality = tagging.candidates(library.store)
    train_pictures = sorted(p for p in train if p.endswith(".png"))
    captioned = sorted(p for p in held if p.endswith(".png") and Path(p).with_suffix(".txt").exists())
    order = {label: n for n, label in enumerate(PICTURE_CLASSES)}
    targets = np.zeros((len(train_pictures), len(order)), bool)
    targets[np.arange(len(train_pictures)), [order[train[p]] for p in train_pictures]] = True
    truth = np.array([order[held[p]] for p in captioned])
    views = tagging.views_of(library.store, [ids[p] for p in train_pictures], modality)
    test_views = tagging.views_of(library.store, [ids[p] for p in captioned], modality)
    figures = {}
    for fusion in ("concat", "attention", "image alone"):
        if fusion == "image alone":
            model = fit(views.only(["image"]), targets, PICTURE_CLASSES, "concat")
            probabilities = model.predict_proba(test_views.only(["image"]))
        else:
            model = fit(views, targets, PICTURE_CLASSES, fusion)
            probabilities = model.predict_proba(test_views)
        figures[fusion] = float((probabilities.argmax(axis=1) == truth).mean())
    print(f"{len(captioned)} held-out captioned pictures: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    assert figures["concat"] >= figures["image alone"]
    assert figures["attention"] >= figures["image alone"]


def test_new_items_are_tagged_as_they_are_indexed_by_every_set(labelled, tmp_path):
    library, root, train, _held = labelled
    labels = read_labelled(str(_labels_csv(tmp_path / "train.csv", train)),
                           {row[1]: row[0] for row in library.store.index_rows()})
    library.train_classifier(labels, "later", fusion="mean", folds=3)
    library.classify(PICTURE_CLASSES, "later-zero", modalities=["image"])
    extra = _collection(root / "extra", 1, seed=HELD_OUT + 77, start=100)
    report = library.run_index([str(root / "extra")])
    assert report.added == len(extra)
    assert report.tagged == len(extra)  # each new item, by the trained set (and pictures by zero-shot)
    ids = {row[1]: row[0] for row in library.store.index_rows()}
    tags = library.store.tags.of([ids[p] for p in extra])
    for path in extra:
        sets = {t.set for t in tags[ids[path]]}
        assert "later" in sets
        assert ("later-zero" in sets) == path.endswith(".png")
    again = library.run_index([str(root / "extra")])
    assert again.added == 0 and again.tagged == 0  # nothing new, nothing tagged


def test_the_cli_trains_classifies_and_evaluates(labelled, tmp_path):
    from click.testing import CliRunner
    from mmsearch.cli import cli
    library, root, train, held = labelled
    env = {"MMSEARCH_DATA_DIR": str(library.data_path), "MMSEARCH_MODEL": "tiny",
           "MMSEARCH_PRETRAINED": library.settings.pretrained, "MMSEARCH_AUDIO_CHECKPOINT": library.settings.audio_checkpoint,
           "MMSEARCH_TAG_TEMPLATES": json.dumps({"image": ["a {}"]})}
    run = lambda *args: CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    trained = run("train-classifier", str(_labels_csv(tmp_path / "cli-train.csv", train)), "--name", "cli",
                  "--folds", "3")
    assert trained.exit_code == 0, trained.output
    assert "concat" in trained.output and "attention" in trained.output and "← chosen" in trained.output
    print(trained.output)
    evaluated = run("evaluate", "--labels", str(_labels_csv(tmp_path / "cli-held.csv", held)), "--set", "cli", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    document = json.loads(evaluated.stdout)
    assert document["items"] == len(held) and document["accuracy"] >= 3 / (len(PICTURE_CLASSES) + len(SOUNDS))
    queries = tmp_path / "queries.csv"
    some = sorted(p for p in held if p.endswith(".png"))[0]
    queries.write_text(f"query,relevant\n{held[some]},{some}\n")
    searched = run("evaluate", str(queries), "--tag", held[some], "--tag-set", "cli", "--json")
    assert searched.exit_code == 0, searched.output
    run_a = json.loads(searched.stdout)["runs"][0]
    assert run_a["options"]["tags"] == [held[some]] and "--tag-set cli" in run_a["flags"]
    ids = {row[1]: row[0] for row in library.store.index_rows()}
    tagged = {i for i, tags in library.store.tags.of(list(ids.values())).items()
              if any(t.set == "cli" and t.label == held[some] for t in tags)}
    assert set(run_a["per_query"][0]["results"]) <= tagged  # the filter holds in evaluate's searches
    listed = json.loads(run("tags", "--json").stdout)
    assert "cli" in {s["name"] for s in listed["sets"]}
    bad = run("classify", str(tmp_path / "missing.txt"))
    assert bad.exit_code == 1 and bad.output.startswith("error:") and len(bad.output.strip().splitlines()) == 1
    deleted = run("tags", "--delete", "cli", "--json")
    assert deleted.exit_code == 0 and not (Path(library.data_path) / "classifiers" / "cli.json").exists()


def test_the_api_classifies_an_uploaded_file_without_indexing_it(labelled, tmp_path):
    import io
    from mmsearch.web import create_app
    library, _root, train, _held = labelled
    if library.store.tags.get("shapes") is None:
        library.classify(PICTURE_CLASSES, "shapes", modalities=["image"])
    if library.store.tags.get("trained-mean") is None:
        labels = read_labelled(str(_labels_csv(tmp_path / "train.csv", train)),
                               {row[1]: row[0] for row in library.store.index_rows()})
        library.train_classifier(labels, "trained-mean", fusion="mean", folds=3)
    client = create_app({"TESTING": True, "MMSEARCH": library.settings}).test_client()
    before = library.store.counts()["items"]
    buffer = io.BytesIO()
    _faded("blue", "cross", HELD_OUT + 999).save(buffer, "PNG")
    picture_bytes = buffer.getvalue()

    def post(**fields):
        data = {k: (io.BytesIO(v), f"{k}.bin") if isinstance(v, bytes) else v for k, v in fields.items()}
        return client.post("/api/classify", data=data, content_type="multipart/form-data")

    answer = post(image=picture_bytes, set=["shapes", "trained-mean"], top="3")
    assert answer.status_code == 200, answer.get_json()
    document = answer.get_json()
    assert document["modality"] == "image" and [s["set"] for s in document["sets"]] == ["shapes", "trained-mean"]
    for tag_set in document["sets"]:
        scores = [label["score"] for label in tag_set["labels"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert {s["labels"][0]["label"] for s in document["sets"]} == {"blue cross"}
    captioned = post(image=picture_bytes, caption="blue", set="trained-mean").get_json()
    assert captioned["sets"][0]["labels"][0]["label"] == "blue cross"
    assert library.store.counts()["items"] == before  # nothing indexed
    for fields, status in [({}, 400), ({"image": picture_bytes, "text": "red"}, 400), ({"image": b"not a picture"}, 400),
                           ({"text": "   "}, 400), ({"text": "red", "top": "0"}, 400), ({"text": "red", "set": "nope"}, 404),
                           ({"text": "red", "colour": "x"}, 400)]:
        refused = post(**fields)
        assert refused.status_code == status and "error" in refused.get_json(), (fields, refused.get_json())
    assert client.post("/api/classify", json={"text": "red"}).status_code == 415


def test_several_labels_an_item_are_learnt_and_tagged_together(labelled, tmp_path):
    """Multi-label data (each picture labelled with its colour and its shape, two rows): every item gets the
    labels whose probability reaches the threshold, and evaluate scores whole label sets."""
    library, _root, train, held = labelled
    pictures = {p: c for p, c in train.items() if p.endswith(".png")}
    path = tmp_path / "both.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        for file, label in sorted(pictures.items()):
            writer.writerows([(file, label.split()[0]), (file, label.split()[1])])
    paths = {row[1]: row[0] for row in library.store.index_rows()}
    labels = read_labelled(str(path), paths)
    assert labels.multi_label
    report = library.train_classifier(labels, "attributes", folds=3)
    print("multi-label cross-validated:", {f: round(m["accuracy"], 3) for f, m in report.figures.items()})
    held_pictures = sorted(p for p in held if p.endswith(".png"))
    tags = library.store.tags.of([paths[p] for p in held_pictures])
    exact = [{t.label for t in tags[paths[p]] if t.set == "attributes"} == set(held[p].split()) for p in held_pictures]
    print(f"held-out pictures with exactly their colour and shape: {np.mean(exact):.3f}")
    assert np.mean(exact) >= 0.5  # chance of an exact pair of 7 labels: far below 0.1
    truth = tmp_path / "held-both.csv"
    with open(truth, "w", newline="") as handle:
        csv.writer(handle).writerows([(p, w) for p in held_pictures for w in held[p].split()])
    evaluated = tagging.evaluate(library, read_labelled(str(truth), paths), "attributes")
    assert evaluated["multi_label"] and evaluated["accuracy"] == pytest.approx(np.mean(exact))


def test_an_index_run_keeps_its_work_when_a_tag_set_cannot_tag(labelled, tmp_path):
    """A trained set whose model file was damaged: the run's items are committed, the set is named on the
    run's skipped lines, and verify stays clean."""
    library, root, train, _held = labelled
    labels = read_labelled(str(_labels_csv(tmp_path / "train.csv", train)),
                           {row[1]: row[0] for row in library.store.index_rows()})
    library.train_classifier(labels, "fragile", fusion="mean", folds=3)
    model = Path(library.data_path) / "classifiers" / "fragile.safetensors"
    model.write_bytes(model.read_bytes()[:100])  # truncated
    extra = _collection(root / "extra-fragile", 1, seed=HELD_OUT + 555, start=200)
    report = library.run_index([str(root / "extra-fragile")])
    assert report.added == len(extra) and report.failed == 0
    assert any("fragile" in line and "did not tag" in line for line in report.scan_errors), report.scan_errors
    ids = {row[1]: row[0] for row in library.store.index_rows()}
    assert all(p in ids for p in extra)
    assert not library.verify()
    library.delete_tag_set("fragile")


def test_hostile_label_files_and_names_are_refused_in_one_line(labelled, tmp_path):
    """Found by attacking the new commands: a CSV field past csv's limit, a set of the other kind under the
    same name, a superscript digit as top: each a clear error, nothing changed."""
    import io
    from mmsearch.errors import MMSearchError
    from mmsearch.web import create_app
    library, _root, train, _held = labelled
    big = tmp_path / "big.csv"
    big.write_text("path,label\n" + next(iter(train)) + "," + "x" * 200_000 + "\n")
    with pytest.raises(MMSearchError, match="not CSV"):
        read_labelled(str(big), {row[1]: row[0] for row in library.store.index_rows()})
    library.classify(PICTURE_CLASSES, "kinds", modalities=["image"])
    before = library.store.tags.get("kinds")
    labels = read_labelled(str(_labels_csv(tmp_path / "t.csv", train)), {row[1]: row[0] for row in library.store.index_rows()})
    with pytest.raises(MMSearchError, match="is a zero-shot set"):
        library.train_classifier(labels, "kinds")
    assert library.store.tags.get("kinds") == before
    client = create_app({"TESTING": True, "MMSEARCH": library.settings}).test_client()
    answer = client.post("/api/classify", data={"text": "red", "top": "\u00b2"}, content_type="multipart/form-data")
    assert answer.status_code == 400 and "top" in answer.get_json()["error"]["message"]
