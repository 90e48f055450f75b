"""End to end through the library: index a generated folder, re-run incrementally, search."""
from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pytest

from mmsearch.library import Library

from .media import picture


def rows(data_dir) -> dict[str, tuple]:
    with sqlite3.connect(data_dir / "mmsearch.db") as db:
        return {r[0]: r[1:] for r in db.execute("SELECT path, id, modality, status, caption, error FROM items")}


def test_first_index_counts_every_modality_and_failure(settings, collection, data_dir):
    root, expected = collection
    library = Library(settings)
    report = library.run_index([root])
    assert report.failed == expected["failed"]
    assert report.added == expected["image"] + expected["text"] + expected["audio"]
    stats = library.stats()
    assert stats["by_modality"] == {m: expected[m] for m in ("image", "audio", "text")}
    assert stats["items"] == sum(stats["by_modality"].values())
    assert stats["failed"] == expected["failed"]
    assert stats["pending"] == expected["audio"]  # no audio tower yet
    assert stats["index"]["ntotal"] == expected["image"] + expected["text"]
    stored = rows(data_dir)
    assert not any("/." in path for path in stored), "hidden files must be skipped"
    assert str(root / "red.txt") not in stored, "a caption sidecar is not an item"
    assert stored[str(root / "red.jpg")][3] == expected["captioned"]["red.jpg"]
    failures = dict(report.failures)
    assert set(failures) == {str(root / n) for n in ("empty.jpg", "notanimage.png", "truncated.jpg", "binary.txt")}
    assert all(reason for reason in failures.values())
    assert "empty" in failures[str(root / "empty.jpg")]
    assert library.verify() == []


def test_rerun_is_incremental(settings, collection, data_dir):
    root, expected = collection
    library = Library(settings)
    first = library.run_index([root])
    before = rows(data_dir)

    again = library.run_index([root])
    assert (again.added, again.updated, again.moved, again.removed, again.failed) == (0, 0, 0, 0, 0)
    assert again.unchanged == first.added + first.failed

    picture(42).save(root / "green.png")  # modify
    os.remove(root / "note.md")  # delete
    os.rename(root / "sub dir" / "blue.webp", root / "renamed blue.webp")  # rename
    report = library.run_index([root])
    assert (report.updated, report.removed, report.moved, report.added) == (1, 1, 1, 0)
    after = rows(data_dir)
    assert after[str(root / "renamed blue.webp")][0] == before[str(root / "sub dir" / "blue.webp")][0], \
        "a moved file keeps its id and vector"
    assert after[str(root / "green.png")][0] == before[str(root / "green.png")][0]
    assert str(root / "note.md") not in after
    assert library.verify() == []


def test_moved_file_is_not_re_embedded(settings, collection, monkeypatch):
    root, _ = collection
    library = Library(settings)
    library.run_index([root])
    vector = library.store.item_vector(library.store.ids_under(str(root / "red.jpg"))[0])
    shutil.move(root / "red.jpg", root / "sub dir" / "red.jpg")
    encoder = library.encoder()
    monkeypatch.setattr(encoder, "encode_pixels", lambda *_: pytest.fail("a moved file was re-embedded"))
    report = library.run_index([root])
    assert report.moved == 1
    moved_id = library.store.ids_under(str(root / "sub dir" / "red.jpg"))[0]
    np.testing.assert_array_equal(library.store.item_vector(moved_id), vector)


def test_copy_reuses_vector_and_touch_is_unchanged(settings, collection):
    root, _ = collection
    library = Library(settings)
    library.run_index([root])
    shutil.copy(root / "green.png", root / "green copy.png")
    os.utime(root / "orange.tiff", ns=(1, 1))  # new mtime, same content
    report = library.run_index([root])
    assert (report.added, report.updated) == (1, 0)
    [original] = library.store.ids_under(str(root / "green.png"))
    [copy] = library.store.ids_under(str(root / "green copy.png"))
    np.testing.assert_array_equal(library.store.item_vector(copy), library.store.item_vector(original))
    assert library.run_index([root]).unchanged == report.unchanged + report.added


def test_indexing_a_second_root_keeps_the_first(settings, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    picture(1).save(first / "one.png")
    picture(2).save(second / "two.png")
    library = Library(settings)
    library.run_index([first])
    report = library.run_index([second])
    assert (report.added, report.removed) == (1, 0)
    assert library.stats()["items"] == 2


def test_caption_edit_updates_metadata(settings, collection, data_dir):
    root, _ = collection
    library = Library(settings)
    library.run_index([root])
    (root / "red.txt").write_text("a crimson photograph")
    report = library.run_index([root])
    assert report.updated == 1
    assert rows(data_dir)[str(root / "red.jpg")][3] == "a crimson photograph"


def test_fixed_broken_file_is_indexed(settings, collection, data_dir):
    root, _ = collection
    library = Library(settings)
    library.run_index([root])
    picture(3).save(root / "notanimage.png")
    report = library.run_index([root])
    assert (report.updated, report.failed) == (1, 0)
    assert rows(data_dir)[str(root / "notanimage.png")][2] == "ok"


def test_search_and_like(settings, collection):
    root, expected = collection
    library = Library(settings)
    library.run_index([root])
    searcher = library.searcher()
    hits = searcher.by_vector(library.encoder().encode_texts(["a red picture"]), k=5)
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    only_text = searcher.by_vector(library.encoder().encode_texts(["bread"]), k=10, modalities=["text"])
    assert len(only_text) == expected["text"] and {h.item.modality for h in only_text} == {"text"}
    target = library.store.ids_under(str(root / "green.png"))[0]
    like = searcher.like(target, k=3)
    assert like[0].id == target and like[0].score == pytest.approx(1.0, abs=1e-5)


def test_like_puts_the_item_before_its_exact_duplicates(settings, tmp_path):
    root = tmp_path / "dups"
    root.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        picture(5).save(root / name)
    library = Library(settings)
    library.run_index([root])
    for name in ("c.png", "b.png", "a.png"):
        [item_id] = library.store.ids_under(str(root / name))
        assert library.searcher().like(item_id, k=3)[0].id == item_id
