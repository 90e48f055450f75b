"""End to end through the library: index a generated folder, re-run incrementally, search."""
from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pytest

from mmsearch.library import Library
from mmsearch.search.tables import vector_id

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
    assert stats["pending"] == 0  # random image/text weights come with a random audio tower
    assert stats["index"]["items"] == expected["image"] + expected["text"] + expected["audio"]
    assert stats["index"]["ntotal"] == sum(stats["vectors"].values())  # content vectors and the caption
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
    # an index run that changed rows leaves SQLite planner statistics of the items as they are now
    assert planned_items(data_dir) == {len(after)}
    assert library.remove([str(root / "green.png")]) == 1  # and so does a removal: stale counts mislead
    assert planned_items(data_dir) == {len(after) - 1}


def planned_items(data_dir) -> set[int]:
    """The item counts in SQLite's planner statistics (one per index of the items table)."""
    with sqlite3.connect(data_dir / "mmsearch.db") as db:
        return {int(stat.split()[0]) for (stat,) in db.execute("SELECT stat FROM sqlite_stat1 WHERE tbl='items'")}


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


def test_reembed_with_a_model_that_cannot_load_changes_nothing(settings, collection, tmp_path):
    root, _ = collection
    library = Library(settings)
    library.run_index([root])
    before = library.stats()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    from mmsearch.errors import ModelLoadError
    with pytest.raises(ModelLoadError):
        Library(settings.replace(pretrained=str(bad))).run_index([root], reembed=True)
    assert Library(settings).stats() == before
    assert Library(settings).verify() == []


def test_moved_item_waiting_for_a_vector_is_embedded(settings, tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    picture(1).save(root / "a.png")
    (root / "n.txt").write_text("a note")
    library = Library(settings)
    library.run_index([root])
    os.rename(root / "n.txt", root / "renamed.txt")
    import torch
    other = tmp_path / "other.pt"
    torch.manual_seed(3)
    import open_clip
    torch.save(open_clip.create_model("tiny").state_dict(), other)
    report = Library(settings.replace(pretrained=str(other))).run_index([root], reembed=True)
    assert (report.moved, report.updated, report.removed) == (1, 1, 0)
    stats = Library(settings.replace(pretrained=str(other))).stats()
    assert stats["pending"] == 0 and stats["index"]["ntotal"] == 2


def test_renaming_across_modalities_is_not_a_move(settings, tmp_path, data_dir):
    root = tmp_path / "m"
    root.mkdir()
    (root / "t.txt").write_text("words, not pixels")
    library = Library(settings)
    library.run_index([root])
    os.rename(root / "t.txt", root / "t.jpg")
    report = library.run_index([root])
    assert (report.moved, report.failed, report.removed) == (0, 1, 1)
    assert rows(data_dir)[str(root / "t.jpg")][1:3] == ("image", "failed")


def test_non_utf8_file_name_is_skipped_not_fatal(settings, tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    picture(1).save(root / "good.png")
    picture(2).save(os.path.join(os.fsencode(root), b"bad\xffname.png"))
    report = Library(settings).run_index([root])
    assert report.added == 1 and any("not valid UTF-8" in e for e in report.scan_errors)


def test_symlinked_folder_does_not_claim_the_real_files(settings, tmp_path, data_dir):
    root = tmp_path / "m"
    (root / "zzz_real").mkdir(parents=True)
    picture(1).save(root / "zzz_real" / "a.png")
    os.symlink(root / "zzz_real", root / "aaa_alias")
    Library(settings).run_index([root])
    assert list(rows(data_dir)) == [str(root / "zzz_real" / "a.png")]


def test_ann_index_type_needing_more_data_is_a_clear_error(settings, collection):
    """IVF falls back to Flat for a modality with fewer vectors than lists; PQ codebooks need 256 vectors."""
    root, _ = collection
    from mmsearch.errors import MMSearchError
    ivf = Library(settings.replace(index_type="IVF1024,Flat"))
    ivf.run_index([root])
    assert {part["type"] for part in ivf.stats()["index"]["by_modality"].values()} == {"Flat"}
    with pytest.raises(MMSearchError, match="cannot be trained"):
        Library(settings.replace(index_type="PQ8")).run_index([root])
    flat = Library(settings)  # SQL kept everything; the Flat cache is rebuilt from it
    stats = flat.stats()
    assert stats["index"]["items"] == stats["items"] - stats["pending"] > 0
    assert flat.verify() == []


def test_sounds_wait_for_an_audio_tower_beside_real_weights(settings, collection, tmp_path, data_dir):
    """Published image/text weights have no audio tower in their space: sounds get metadata, no vector."""
    import open_clip
    import torch
    root, expected = collection
    checkpoint = tmp_path / "tiny.pt"
    torch.save(open_clip.create_model("tiny").state_dict(), checkpoint)
    library = Library(settings.replace(pretrained=str(checkpoint)))
    library.run_index([root])
    stats = library.stats()
    assert stats["pending"] == expected["audio"] and stats["by_modality"]["audio"] == expected["audio"]
    assert stats["index"]["items"] == expected["image"] + expected["text"]
    status, error = rows(data_dir)[str(root / "beep.wav")][2:5:2]
    assert status == "pending" and "audio" in error
    with sqlite3.connect(data_dir / "mmsearch.db") as db:
        assert db.execute("SELECT duration, sample_rate, channels FROM items WHERE path LIKE '%beep.wav'"
                          ).fetchone() == (0.5, 16000, 1)


def test_caption_is_embedded_as_a_vector_of_its_own_and_fused_into_the_item_vector(settings, collection, data_dir):
    root, _ = collection
    library = Library(settings.replace(modality_weights="image=1,audio=1,text=0.5"))
    library.run_index([root])
    [red] = library.store.ids_under(str(root / "red.jpg"))
    image = library.store.item_vector(red)
    caption = library.store.item_vector(red, "caption")
    np.testing.assert_allclose(caption, library.encoder().encode_texts(["a red picture with round shapes"])[0],
                               atol=1e-5)
    # the index holds both, each once; the item's one vector (--like, dedupe) fuses them by the weights
    np.testing.assert_allclose(library.index().reconstruct(vector_id(red, 0)), image, atol=1e-6)
    np.testing.assert_allclose(library.index().reconstruct(vector_id(red, 1)), caption, atol=1e-6)
    fused = image + 0.5 * caption
    fused /= np.linalg.norm(fused)
    np.testing.assert_allclose(library.store.item_vectors([red], library.settings.modality_weights)[red], fused,
                               atol=1e-5)
    [green] = library.store.ids_under(str(root / "green.png"))
    with pytest.raises(RuntimeError):
        library.index().parts["image"].reconstruct(vector_id(green, 1))  # no caption, no caption vector

    (root / "red.txt").write_text("a crimson photograph")  # caption edited: re-embedded
    assert library.run_index([root]).updated == 1
    new_caption = library.encoder().encode_texts(["a crimson photograph"])[0]
    np.testing.assert_allclose(library.store.item_vector(red, "caption"), new_caption, atol=1e-5)
    np.testing.assert_allclose(Library(library.settings).index().reconstruct(vector_id(red, 1)), new_caption,
                               atol=1e-5)

    os.remove(root / "red.txt")  # caption gone: the item is its image again
    library.run_index([root])
    assert library.store.item_vector(red, "caption") is None
    again = Library(library.settings).index()
    assert vector_id(red, 1) not in again.ids() and vector_id(red, 0) in again.ids()
    assert library.verify() == []

    other = Library(settings.replace(modality_weights="image=1,audio=1,text=2"))
    other.run_index([root])  # new weights change no indexed vector: the index stays as it is
    assert other.last_sync.action == "fresh"


def test_read_ahead_keeps_decoded_sound_within_its_budget():
    """Files are decoded ahead in worker threads; long sounds must not pile up: the estimated bytes in
    flight stay within the budget (an item dearer than the budget runs alone), results come back in order."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor
    from mmsearch.indexer.bounded import bounded_map as _bounded_map
    costs = [100, 100, 100, 10, 10, 10, 10, 300, 10, 100, 0, 0, 0, 0]
    lock = threading.Lock()
    running: dict[int, int] = {}
    seen: list[dict[int, int]] = []

    def work(n: int) -> int:
        with lock:
            running[n] = costs[n]
            seen.append(dict(running))
        time.sleep(0.02)
        with lock:
            del running[n]
        return n

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(_bounded_map(pool, work, list(range(len(costs))), 8, lambda n: costs[n], 250))
    assert results == list(range(len(costs)))
    assert all(sum(held.values()) <= 250 or len(held) == 1 for held in seen), seen
    assert max(len(held) for held in seen) >= 4  # cheap items still run side by side
    assert {7: 300} in seen  # the dear one, alone
