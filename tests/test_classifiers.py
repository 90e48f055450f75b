"""Classification models (issue #15): zero-shot tagging, trained classifiers over an item's stored vectors
with three fusions, their files, and the classification metrics.

The synthetic collection makes the class recoverable only by combining views: class = colour × shape, the
image view carries the shape strongly and the colour weakly, the caption view carries the colour strongly
(and no shape), and half of the items have a caption. Figures are printed (-s).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmsearch.encoders.classifier_metrics import classification_report, label_matrix
from mmsearch.encoders.classifier_training import best_fusion, compare_fusions, cross_validate, train
from mmsearch.encoders.classifiers import FUSIONS, Classifier, load_classifier
from mmsearch.encoders.views import VIEWS, Views, build_views, item_views, select_views, subset, views_from
from mmsearch.encoders.zero_shot import DEFAULT_TEMPLATES, check_templates, label_vectors, top_labels, \
    zero_shot_scores
from mmsearch.errors import ModelLoadError

DIM = 48
COLOURS, SHAPES = 3, 3


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def colour_shape(n: int, seed: int, caption_share: float = 0.5) -> tuple[Views, np.ndarray]:
    """(views, class index per item): image = shape + weak colour + noise; caption = colour + noise."""
    basis = np.linalg.qr(np.random.default_rng(1234).normal(size=(DIM, DIM)))[0].T  # fixed across splits
    colour_dirs, shape_dirs = basis[:COLOURS], basis[COLOURS:COLOURS + SHAPES]
    rng = np.random.default_rng(seed)
    colour, shape = rng.integers(0, COLOURS, n), rng.integers(0, SHAPES, n)
    image = unit(shape_dirs[shape] + 0.12 * colour_dirs[colour] + 0.12 * rng.normal(size=(n, DIM)))
    caption = unit(colour_dirs[colour] + 0.25 * rng.normal(size=(n, DIM)))
    has_caption = rng.random(n) < caption_share
    items = [item_views("image", image[i], caption[i] if has_caption[i] else None) for i in range(n)]
    return build_views(items, DIM), colour * SHAPES + shape


def one_hot(classes: np.ndarray, count: int = COLOURS * SHAPES) -> np.ndarray:
    return np.eye(count, dtype=bool)[classes]


LABELS = [f"c{c}-s{s}" for c in range(COLOURS) for s in range(SHAPES)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These problems are small: on a machine the other tests keep busy, torch's second thread only waits
    for a core (training ran 4-13x slower with two threads than with one under load). Restored after."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    train_views, train_classes = colour_shape(900, seed=1)
    test_views, test_classes = colour_shape(600, seed=2)
    return train_views, one_hot(train_classes), test_views, test_classes


@pytest.fixture(scope="module")
def models(data):
    train_views, targets, _, _ = data
    trained = {fusion: train(train_views, targets, LABELS, fusion, seed=0) for fusion in FUSIONS}
    trained["image only"] = train(train_views, targets, LABELS, "concat", use=("image",), seed=0)
    return trained


def accuracy(model: Classifier, views: Views, classes: np.ndarray) -> float:
    return float(np.mean(model.predict_proba(views).argmax(axis=1) == classes))


# --- views -------------------------------------------------------------------------------------------------

def test_views_from_item_dicts_and_selection():
    a, b, c = unit(np.random.default_rng(0).normal(size=(3, 4)))
    views = build_views([{"image": a, "caption": b}, {"text": 2 * c}, {}], dim=4)
    assert VIEWS == ("image", "audio", "text", "caption")
    assert views.vectors.shape == (3, 4, 4) and views.vectors.dtype == np.float32
    assert views.mask.tolist() == [[True, False, False, True], [False, False, True, False], [False] * 4]
    assert np.allclose(views.vectors[1, 2], c, atol=1e-6)  # renormalised
    assert not views.vectors[0, 1].any() and not views.vectors[2].any()  # zeros where missing
    image = select_views(views, ("image",))
    assert image.mask.tolist() == [[True, False, False, False], [False] * 4, [False] * 4]
    assert not image.vectors[0, 3].any() and views.mask[0, 3]  # the input is left alone
    assert all(np.array_equal(a, b) for a, b in zip(views.only(["image"]), image))
    assert np.array_equal(views_from([{"image": a}], 4).vectors, build_views([{"image": a}], 4).vectors)
    assert subset(views, np.array([1])).mask.tolist() == [[False, False, True, False]]
    assert item_views("audio", a, None).keys() == {"audio"} and item_views("text", a, b).keys() == {"text", "caption"}
    with pytest.raises(ValueError, match="colour"):
        build_views([{"colour": a}], dim=4)
    with pytest.raises(ValueError, match="dimension"):
        build_views([{"image": np.ones(5)}], dim=4)
    with pytest.raises(ValueError, match="finite"):
        build_views([{"image": np.array([np.nan, 1, 0, 0])}], dim=4)
    with pytest.raises(ValueError, match="colour"):
        select_views(views, ("colour",))


# --- trained classifiers -------------------------------------------------------------------------------------

def test_each_fusion_beats_chance_and_combining_views_beats_the_image_alone(data, models):
    _, _, test_views, test_classes = data
    both = test_views.mask[:, VIEWS.index("caption")]
    chance = 1 / len(LABELS)
    figures = {name: (accuracy(model, test_views, test_classes),
                      accuracy(model, subset(test_views, both), test_classes[both])) for name, model in models.items()}
    for name, (overall, with_caption) in figures.items():
        print(f"{name:>10}: held-out accuracy {overall:.3f}, on items with a caption {with_caption:.3f} "
              f"(chance {chance:.3f})")
    for fusion in FUSIONS:
        assert figures[fusion][0] >= 3 * chance, (fusion, figures)
    for fusion in ("concat", "attention"):
        assert figures[fusion][1] >= figures["image only"][1], (fusion, figures)
    assert figures["concat"][1] > figures["image only"][1] + 0.1  # the caption really carries the colour


def test_an_image_only_classifier_ignores_captions(data, models):
    _, _, test_views, _ = data
    image_only = models["image only"]
    assert image_only.views == ("image",)
    assert np.allclose(image_only.predict_proba(test_views),
                       image_only.predict_proba(select_views(test_views, ("image",))), atol=1e-6)


def test_cross_validation_side_by_side(data):
    train_views, targets, _, _ = data
    results = compare_fusions(subset(train_views, np.arange(450)), targets[:450], LABELS, folds=3, seed=0)
    assert list(results) == list(FUSIONS)
    for fusion, result in results.items():
        print(fusion, {k: result[k] for k in ("accuracy", "macro_f1", "folds")})
        assert result["folds"] == 3 and len(result["per_fold"]) == 3
        assert 3 / len(LABELS) <= result["accuracy"] <= 1 and 0 < result["macro_f1"] <= 1
    assert best_fusion(results) in FUSIONS
    assert results[best_fusion(results)]["macro_f1"] == max(r["macro_f1"] for r in results.values())


def test_cross_validation_with_few_items():
    views, _ = colour_shape(40, seed=5)
    targets = one_hot(np.r_[np.zeros(37, int), np.ones(3, int)], 2)  # the second label: 3 items
    result = cross_validate(views, targets, ["a", "b"], "mean", folds=5, seed=0)
    assert result["folds"] == 3  # no more folds than the smallest label has items
    lonely = one_hot(np.r_[np.zeros(39, int), np.ones(1, int)], 2)
    with pytest.raises(ValueError, match="'b'.*1 item"):
        cross_validate(views, lonely, ["a", "b"], "concat")
    with pytest.raises(ValueError, match="2 labels"):
        cross_validate(views, np.ones((40, 1), bool), ["a"], "concat")
    with pytest.raises(ValueError, match="fusion"):
        train(views, targets, ["a", "b"], "sum")


def test_training_is_deterministic_with_a_seed(data):
    train_views, targets, test_views, _ = data
    for fusion in FUSIONS:
        first, second = (train(subset(train_views, np.arange(300)), targets[:300], LABELS, fusion, seed=3)
                         for _ in range(2))
        assert np.array_equal(first.predict_proba(test_views), second.predict_proba(test_views)), fusion
    a, b = (cross_validate(subset(train_views, np.arange(300)), targets[:300], LABELS, "attention", folds=3, seed=s)
            for s in (0, 0))
    assert a["per_fold"] == b["per_fold"]


def test_predictions_name_labels_with_scores(data, models):
    _, _, test_views, test_classes = data
    model = models["concat"]
    predicted = model.predict(subset(test_views, np.arange(5)))
    proba = model.predict_proba(subset(test_views, np.arange(5)))
    assert [[label for label, _ in row] for row in predicted] == [[int(i)] for i in proba.argmax(axis=1)]
    assert all(abs(score - proba[n, label]) < 1e-6 for n, row in enumerate(predicted) for label, score in row)
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5) and proba.dtype == np.float32
    # an item with no view the classifier uses gets no label
    audio = build_views([{"audio": test_views.vectors[0, 0]}], DIM)
    assert models["image only"].predict(audio) == [[]]


def test_multi_label():
    views, classes = colour_shape(600, seed=7)
    colour, shape = classes // SHAPES, classes % SHAPES
    targets = np.zeros((600, COLOURS + SHAPES), bool)  # each item: its colour and its shape
    targets[np.arange(600), colour] = True
    targets[np.arange(600), COLOURS + shape] = True
    labels = [f"colour{c}" for c in range(COLOURS)] + [f"shape{s}" for s in range(SHAPES)]
    model = train(subset(views, np.arange(400)), targets[:400], labels, "concat", seed=0)
    assert model.multi_label and model.threshold == 0.5
    held = subset(views, np.arange(400, 600))
    proba = model.predict_proba(held)
    assert proba.shape == (200, 6) and not np.allclose(proba.sum(axis=1), 1)
    predicted = model.predict(held)
    assert all(row for row in predicted)  # at least the best label, every training item had one
    assert all([score for _, score in row] == sorted((s for _, s in row), reverse=True) for row in predicted)
    decided = model.decide(proba)
    report = classification_report(targets[400:], decided, labels)
    print("multi-label:", {k: report[k] for k in ("accuracy", "micro_f1", "macro_f1")})
    assert report["multi_label"] and report["per_class"]["shape0"]["f1"] > 0.9 and report["micro_f1"] > 0.7
    result = cross_validate(views, targets, labels, "attention", folds=3)
    assert result["accuracy"] > 0.3 and result["macro_f1"] > 0.6


# --- files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", FUSIONS)
def test_save_and_load_give_identical_predictions(fusion, data, models, tmp_path):
    _, _, test_views, _ = data
    model = models[fusion]
    tensors, meta = model.save(tmp_path / "tags")
    assert tensors == tmp_path / "tags.safetensors" and meta == tmp_path / "tags.json"
    saved = json.loads(meta.read_text())
    assert saved["fusion"] == fusion and saved["labels"] == LABELS and saved["dim"] == DIM
    assert saved["multi_label"] is False and saved["views"] == ["image", "caption"]
    assert saved["training"]["items"] == 900
    loaded = load_classifier(tmp_path / "tags")
    assert np.array_equal(loaded.predict_proba(test_views), model.predict_proba(test_views))
    assert load_classifier(tmp_path / "tags.json").labels == LABELS
    assert np.array_equal(Classifier.load(tmp_path / "tags").predict_proba(test_views), loaded.predict_proba(test_views))


def _hostile(stem: Path, case: str) -> None:
    meta_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    meta = json.loads(meta_path.read_text())
    if case == "not json":
        meta_path.write_text("{not json")
    elif case == "unknown fusion":
        meta["fusion"] = "sum"
    elif case == "huge label list":
        meta["labels"] = [f"l{i}" for i in range(200_000)]
    elif case == "duplicate labels":
        meta["labels"] = ["a"] * len(meta["labels"])
    elif case == "bad threshold":
        meta["threshold"] = float("nan")
    elif case == "newer format":
        meta["version"] = 99
    elif case == "missing tensors":
        tensor_path.unlink()
    elif case == "truncated tensors":
        tensor_path.write_bytes(tensor_path.read_bytes()[:100])
    elif case in ("wrong shape", "nan weights"):
        from safetensors.numpy import load_file, save_file
        tensors = load_file(str(tensor_path))
        name = next(k for k in tensors if k != "centre")
        if case == "wrong shape":
            tensors[name] = np.zeros(tuple(s + 1 for s in tensors[name].shape), np.float32)
        else:
            tensors[name] = np.full_like(tensors[name], np.nan)
        save_file(tensors, str(tensor_path), metadata={"format": "mmsearch-classifier"})
        import hashlib
        meta["tensors_sha256"] = hashlib.sha256(tensor_path.read_bytes()).hexdigest()  # the pair agrees
    elif case == "mismatched pair":
        stem.with_name("other.safetensors").replace(tensor_path)
    if case != "not json":
        meta_path.write_text(json.dumps(meta))


HOSTILE = ("not json", "unknown fusion", "huge label list", "duplicate labels", "bad threshold", "newer format",
           "missing tensors", "truncated tensors", "wrong shape", "nan weights", "mismatched pair")


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_files_are_refused(case, models, tmp_path):
    models["attention"].save(tmp_path / "tags")
    models["image only"].save(tmp_path / "other")
    _hostile(tmp_path / "tags", case)
    with pytest.raises(ModelLoadError, match="classifier"):
        load_classifier(tmp_path / "tags")


# --- metrics ------------------------------------------------------------------------------------------------

def test_single_label_report_by_hand():
    labels = ["cat", "dog", "owl"]
    truth = np.eye(3, dtype=bool)[[0, 0, 0, 1, 1, 2]]
    predicted = np.eye(3, dtype=bool)[[0, 0, 1, 1, 2, 2]]
    report = classification_report(truth, predicted, labels)
    assert report["multi_label"] is False and report["items"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]  # rows: truth, columns: predicted
    cat, dog, owl = (report["per_class"][name] for name in labels)
    assert (cat["precision"], cat["recall"], cat["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert cat["f1"] == pytest.approx(0.8)
    assert (dog["precision"], dog["recall"], dog["f1"], dog["support"]) == (0.5, 0.5, 0.5, 2)
    assert (owl["precision"], owl["recall"], owl["support"]) == (0.5, 1.0, 1) and owl["f1"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["micro_f1"] == pytest.approx(4 / 6)


def test_multi_label_report_by_hand():
    labels = ["red", "round", "big"]
    truth = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], bool)
    predicted = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    report = classification_report(truth, predicted, labels)
    assert report["multi_label"] is True and report["accuracy"] == 0.25  # exact sets: item 0 only
    red, round_, big = (report["per_class"][name] for name in labels)
    assert (red["precision"], red["recall"], red["f1"]) == (1.0, 1.0, 1.0)
    assert (round_["precision"], round_["recall"]) == (pytest.approx(2 / 3), 1.0) and round_["f1"] == pytest.approx(0.8)
    assert (big["precision"], big["recall"], big["f1"], big["support"]) == (0.0, 0.0, 0.0, 2)
    assert round_["confusion"] == [[1, 1], [0, 2]]  # [[tn, fp], [fn, tp]]
    assert report["macro_f1"] == pytest.approx(1.8 / 3)
    assert report["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))  # tp 4, fp 1, fn 2
    assert report["confusion"] is None


def test_label_matrix_from_label_sets():
    matrix, labels = label_matrix([["dog"], ["cat", "dog"], ["cat"]])
    assert labels == ["cat", "dog"] and matrix.tolist() == [[False, True], [True, True], [True, False]]
    with pytest.raises(ValueError, match="owl"):
        label_matrix([["owl"]], labels=["cat"])
    with pytest.raises(ValueError, match="shape"):
        classification_report(np.zeros((2, 2), bool), np.zeros((3, 2), bool), ["a", "b"])


# --- zero-shot ----------------------------------------------------------------------------------------------

class FakeTexts:
    """A text tower that maps each word to a fixed random direction and a text to its words' mean."""

    def __init__(self, dim: int = 16):
        self.dim, self.calls, self.words = dim, [], {}

    def word(self, word: str) -> np.ndarray:
        if word not in self.words:
            self.words[word] = np.random.default_rng(len(self.words)).normal(size=self.dim)
        return self.words[word]

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return unit(np.stack([np.mean([self.word(w) for w in t.strip(".").split()], axis=0) for t in texts]))


def test_label_vectors_average_the_templates():
    encode = FakeTexts()
    vectors = label_vectors(encode, ["cat", "dog"], ["a photo of {}.", "{}"])
    assert encode.calls == [["a photo of cat.", "cat", "a photo of dog.", "dog"]]  # one batch
    expected = unit(unit(np.stack([encode(["a photo of cat."])[0], encode(["cat"])[0]])).mean(axis=0))
    assert vectors.shape == (2, 16) and np.allclose(vectors[0], expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    assert set(DEFAULT_TEMPLATES) == {"image", "audio", "text"}
    assert all(len(t) >= 2 and check_templates(t) == t for t in DEFAULT_TEMPLATES.values())
    for bad in (["a photo of"], ["{} and {}"], []):
        with pytest.raises(ValueError, match="template"):
            label_vectors(encode, ["cat"], bad)
    with pytest.raises(ValueError, match="label"):
        label_vectors(encode, [], ["{}"])


def test_top_labels_and_zero_shot_scores():
    scores = np.array([[0.1, 0.3, 0.2], [0.05, 0.01, 0.02]], np.float32)
    assert top_labels(scores) == [[(1, pytest.approx(0.3))], [(0, pytest.approx(0.05))]]  # everyone gets one
    assert [[i for i, _ in row] for row in top_labels(scores, top=2)] == [[1, 2], [0, 2]]
    assert [[i for i, _ in row] for row in top_labels(scores, top=3, min_score=0.15)] == [[1, 2], []]
    with pytest.raises(ValueError, match="top"):
        top_labels(scores, top=0)
    encode = FakeTexts(dim=8)
    per_modality = {m: label_vectors(encode, ["cat", "dog"], t) for m, t in DEFAULT_TEMPLATES.items()}
    cat, dog = encode(["cat"])[0], encode(["dog"])[0]
    views = build_views([{"image": cat}, {"text": dog}, {"caption": cat}, {"audio": dog, "caption": cat}], 8)
    scored = zero_shot_scores(views, per_modality)
    assert scored.shape == (4, 2) and np.isnan(scored[2]).all()  # a caption alone is not scored by default
    assert [row[0][0] for row in top_labels(scored[[0, 1, 3]])] == [0, 1, 1]
    assert top_labels(scored)[2] == []
    mixed = zero_shot_scores(views, per_modality, caption_weight=1.0)
    assert np.isfinite(mixed[2]).all() and mixed[3, 0] > scored[3, 0]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_the_one_pass_forward_equals_the_training_head(fusion, models):
    """Prediction folds the centring into constants and reads each view in place; training reads features."""
    import torch
    net = models[fusion].net
    views = build_views([{name: v for name, v, keep in zip(VIEWS, unit(np.random.default_rng(i).normal(size=(4, DIM))),
                                                           np.random.default_rng(i + 99).random(4) < 0.6) if keep}
                         for i in range(64)], DIM)
    vectors, mask = torch.from_numpy(views.vectors), torch.from_numpy(views.mask)
    with torch.no_grad():
        assert torch.allclose(net(vectors, mask), net.head(net.inputs(vectors, mask)), atol=1e-4)
