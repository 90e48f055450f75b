"""Bulk export and import (issue #13 point 3): `export` then `import` into a fresh data dir round-trips every item
and vector, on SQLite and PostgreSQL; a malformed file is refused whole, naming its row, and nothing is
written; a file of only the required columns imports; 20k rows import and are found by their vectors; the
indexer leaves imported items outside its roots alone."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from mmsearch.library import Library
from mmsearch.search.store import Store
from mmsearch.search.tables import Item, Vector
from mmsearch.settings import load_settings

from .media import tone_wav

ROOT = Path(__file__).resolve().parents[1]
DIM = 64  # the tiny model's
FIELDS = ("modality", "size", "mtime_ns", "mime", "width", "height", "duration", "sample_rate", "channels",
          "taken_at", "caption", "text", "status", "error", "layout", "name_terms")
TINY = {"mmsearch_model": json.dumps({"dim": DIM, "name": "tiny", "pretrained": "random"}),
        "mmsearch_model_source": json.dumps({"name": "tiny", "pretrained": "random"}),
        "mmsearch_audio_key": json.dumps("audio/random-tiny")}


def ok(result) -> dict:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def refused(result) -> str:
    """The one-line error of a refused command (exit 1), with nothing on stdout."""
    assert result.exit_code == 1 and result.stdout == "", (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def snapshot(url: str) -> tuple[dict, dict, dict]:
    """Every item's fields and every vector by path, and the model entries, as SQL holds them."""
    store = Store(url)
    with store.session() as session:
        items = {item.path: tuple(getattr(item, f) for f in FIELDS) for item in session.scalars(select(Item))}
        vectors: dict[str, list] = {}
        for path, slot, kind, start, end, encoder, dim, data in session.execute(
                select(Item.path, Vector.slot, Vector.kind, Vector.span_start, Vector.span_end, Vector.encoder,
                       Vector.dim, Vector.data).join(Item).order_by(Item.path, Vector.slot)):
            vectors.setdefault(path, []).append((slot, kind, start, end, encoder, dim, np.frombuffer(data, "<f4")))
    meta = {key: store.get_meta(key) for key in ("model", "model_source", "audio_key")}
    store.engine.dispose()
    return items, vectors, meta


def state(url: str) -> tuple[int, int, int]:
    """Items, vectors and the generation: what a refused import must leave as it was."""
    store = Store(url)
    counts = store.counts()
    out = counts["items"] + counts["failed"], sum(counts["vectors"].values()), store.generation()
    store.engine.dispose()
    return out


def units(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def table(n: int, vectors: np.ndarray | None = None, prefix: str = "/imported", metadata: dict | None = None,
          **columns) -> pa.Table:
    """A file of n rows of the required columns (paths prefix/item00000.jpg ..., images) plus ``columns``."""
    vectors = units(n) if vectors is None else vectors
    data = {"path": [f"{prefix}/item{i:05d}.jpg" for i in range(n)], "modality": ["image"] * n,
            "vector": pa.array(list(vectors), pa.list_(pa.float32())), **columns}
    return pa.table(data).replace_schema_metadata(metadata)


def write(tmp_path: Path, name: str, data: pa.Table) -> str:
    path = tmp_path / name
    pq.write_table(data, path)
    return str(path)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """The samples, a note long enough for passages and a 5 s sound long enough for segments (tiny: 2 s)."""
    root = tmp_path / "media"
    shutil.copytree(ROOT / "samples", root)
    sentences = (f"The river runs past mill number {n} where the miller grinds the grain of the valley."
                 for n in range(40))
    (root / "notes" / "long.txt").write_text(" ".join(sentences))
    tone_wav(root / "sounds" / "long.wav", 330.0, 5.0)
    return root


@pytest.fixture
def indexed(runner, media, data_dir) -> str:
    """The media indexed with tiny into the default data dir (SQLite); returns its database URL."""
    assert ok(runner("index", str(media), "--json"))["added"] == 12
    return f"sqlite:///{data_dir / 'mmsearch.db'}"


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_export_then_import_round_trips_every_item_and_vector(store_kind, runner, media, tmp_path, request):
    urls = [request.getfixturevalue("postgres").new_database() for _ in range(2)] if store_kind == "postgresql" \
        else [f"sqlite:///{tmp_path / d / 'mmsearch.db'}" for d in ("a", "b")]
    source, fresh = ({"MMSEARCH_DATA_DIR": str(tmp_path / d), "MMSEARCH_DB_URL": url} for d, url in zip("ab", urls))
    assert ok(runner("index", str(media), "--json", extra_env=source))["added"] == 12
    file = tmp_path / "collection.parquet"
    exported = ok(runner("export", str(file), "--json", extra_env=source))
    items, vectors, meta = snapshot(urls[0])
    assert (exported["exported"], exported["skipped"], exported["dim"]) == (12, 0, DIM)
    assert exported["vectors"] == sum(len(v) for v in vectors.values())
    kinds = {row[1] for rows in vectors.values() for row in rows}
    assert kinds == {"content", "caption", "passage", "segment"}  # every kind of vector is in the file
    written = pq.read_table(file)
    assert sorted(written.column("path").to_pylist()) == sorted(items)
    assert json.loads(written.schema.metadata[b"mmsearch_model"]) == meta["model"]

    imported = ok(runner("import", str(file), "--json", extra_env=fresh))
    assert (imported["imported"], imported["vectors"]) == (12, exported["vectors"])
    assert imported["by_modality"] == {"image": 5, "audio": 3, "text": 4}
    again_items, again_vectors, again_meta = snapshot(urls[1])
    assert again_meta == meta and again_items == items
    assert again_vectors.keys() == vectors.keys()
    for path, rows in vectors.items():
        assert [r[:6] for r in again_vectors[path]] == [r[:6] for r in rows], path
        for before, after in zip(rows, again_vectors[path]):
            np.testing.assert_allclose(after[6], before[6], atol=2e-7)
    assert ok(runner("verify", "--json", extra_env=fresh))["ok"]
    assert state(urls[1])[2] == 1  # one transaction, one generation
    for query in (["a red apple"], ["the miller grinds the grain"], ["a doorbell"], ["sailboat", "--hybrid"]):
        found = [ok(runner("search", *query, "-k", "20", "--json", extra_env=env))["results"]
                 for env in (source, fresh)]
        assert [(r["path"], round(r["score"], 5), r["match"]["kind"]) for r in found[0]] == \
            [(r["path"], round(r["score"], 5), r["match"]["kind"]) for r in found[1]], query
    assert found[1][0]["name"] == "sailboat.gif"  # the full-text index holds the imported items' names


def bad_files(tmp_path: Path) -> list[tuple[str, str, str]]:
    """(file, what the error must say, its JSON code) for each way a file can be wrong."""
    vectors = units(8)
    short = list(vectors)
    short[2] = short[2][:DIM - 1]
    nan = vectors.copy()
    nan[4, 7] = np.nan
    zero = vectors.copy()
    zero[5] = 0
    twice = table(8)
    paths = twice.column("path").to_pylist()
    paths[6] = paths[1]
    modalities = ["image"] * 8
    modalities[3] = "video"
    indexed_path = twice.column("path").to_pylist()
    indexed_path[5] = str(tmp_path / "media" / "photos" / "sunset.jpg")  # the indexed fixture's
    (tmp_path / "notes.txt").write_text("path,modality,vector\n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    large = table(12_000)
    large_nan = units(12_000)
    large_nan[11_499, 0] = np.inf
    vit = {**TINY, "mmsearch_model": json.dumps({"dim": 512, "name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})}
    parts = pa.array([[{"kind": "segment", "start": 0.0, "end": 1.0, "vector": list(vectors[0])}]] * 8)
    passages = pa.array([[]] * 7 + [[{"kind": "passage", "start": 0.0, "end": 9.0, "vector": list(vectors[0])}]])
    tower = {**TINY, "mmsearch_audio_key": json.dumps("audio/another")}
    return [
        (write(tmp_path, "dim.parquet", table(8, short)), "row 3: vector has 63 values, not 64", "bad_request"),
        (write(tmp_path, "nan.parquet", table(8, nan)), "row 5: vector holds a value that is not a finite",
         "bad_request"),
        (write(tmp_path, "zero.parquet", table(8, zero)), "row 6: vector is all zeros", "bad_request"),
        (write(tmp_path, "twice.parquet", twice.set_column(0, "path", pa.array(paths))),
         "row 7: path '/imported/item00001.jpg' is also on row 2", "bad_request"),
        (write(tmp_path, "video.parquet", table(8).set_column(1, "modality", pa.array(modalities))),
         "row 4: modality 'video' is none of image, audio, text", "bad_request"),
        (write(tmp_path, "novector.parquet", table(8).drop_columns(["vector"])), "has no 'vector' column",
         "bad_request"),
        (write(tmp_path, "damaged.parquet", table(8, metadata={"mmsearch_model": '"tiny"'})),
         "is not a Parquet file that mmsearch reads", "bad_request"),
        (write(tmp_path, "strings.parquet", table(8).set_column(2, "vector", pa.array(["x"] * 8))),
         "column 'vector' holds string, not a list of floats", "bad_request"),
        (str(tmp_path / "notes.txt"), "is not a Parquet file", "bad_request"),
        (str(tmp_path / "empty.parquet"), "is not a Parquet file", "bad_request"),
        (str(tmp_path / "missing.parquet"), "no such file", "bad_request"),
        (write(tmp_path, "taken.parquet", table(8).set_column(0, "path", pa.array(indexed_path))),
         f"row 6: path '{indexed_path[5]}' is already in the data dir", "bad_request"),
        (write(tmp_path, "segment.parquet", table(8, parts=parts)),
         "row 1: part 1 is a 'segment': a note's parts are passages, a sound's segments", "bad_request"),
        (write(tmp_path, "passage.parquet", table(8, modality=["text"] * 8, text=["a note"] * 8, parts=passages)),
         "row 8: part 1 spans 0-9, outside its item's text", "bad_request"),
        (write(tmp_path, "tower.parquet", table(8, metadata=tower, modality=["audio"] * 8)),
         "audio/another (audio_key)", "model_mismatch"),
        (write(tmp_path, "late.parquet", table(12_000, large_nan)), "row 11500: vector holds", "bad_request"),
        (write(tmp_path, "vit.parquet", table(8, metadata=vit)), "ViT-B-32", "model_mismatch"),
        (write(tmp_path, "large.parquet", large.set_column(0, "path", pa.array(
            large.column("path").to_pylist()[:11_999] + ["/imported/item00003.jpg"]))),
         "row 12000: path '/imported/item00003.jpg' is also on row 4", "bad_request"),
    ]


def test_a_malformed_file_is_refused_whole_naming_its_row(runner, indexed, tmp_path):
    before = state(indexed)
    for file, says, code in bad_files(tmp_path):
        line = refused(runner("import", file))
        assert says in line and "Traceback" not in line, (file, line)
        error = json.loads(runner("import", file, "--json").stdout)["error"]
        assert error["code"] == code and says in error["message"], (file, error)
        assert state(indexed) == before, file  # no item, no vector, no generation
    assert ok(runner("verify", "--json"))["ok"]


def test_a_file_of_only_the_required_columns(runner, indexed, tmp_path):
    raw = units(3) * np.float32(3.5)  # not unit length: normalised on the way in
    file = write(tmp_path, "plain.parquet", table(3, raw, prefix="/elsewhere", extra=["a", "b", "c"]))
    report = ok(runner("import", file, "--json"))
    assert (report["imported"], report["vectors"], report["ignored_columns"]) == (3, 3, ["extra"])
    items, vectors, _ = snapshot(indexed)
    for i in range(3):
        item = dict(zip(FIELDS, items[f"/elsewhere/item{i:05d}.jpg"]))
        assert (item["status"], item["layout"], item["size"], item["mtime_ns"]) == ("ok", 2, 0, 0)
        assert item["caption"] is None and item["text"] is None
        (slot, kind, *_rest, encoder, dim, vector), = vectors[f"/elsewhere/item{i:05d}.jpg"]
        assert (slot, kind, encoder, dim) == (0, "content", "tiny/random", DIM)
        np.testing.assert_allclose(vector, raw[i] / np.linalg.norm(raw[i]), atol=1e-6)
    assert ok(runner("verify", "--json"))["ok"]
    assert ok(runner("stats", "--json"))["by_modality"]["image"] == 5 + 3
    store = Store(indexed)
    first = store.ids_under("/elsewhere/item00000.jpg")[0]
    store.engine.dispose()
    found = ok(runner("search", "--like", str(first), "-k", "1", "--json"))
    assert found["results"][0]["path"] == "/elsewhere/item00000.jpg"


def test_a_fresh_data_dir_takes_the_files_model_or_else_the_configured_one(runner, tmp_path):
    urls = {d: f"sqlite:///{tmp_path / d / 'mmsearch.db'}" for d in ("a", "b", "c")}
    ok(runner("import", write(tmp_path, "tiny.parquet", table(4, metadata=TINY)), "--data-dir", str(tmp_path / "a"),
              "--json"))
    ok(runner("import", write(tmp_path, "plain.parquet", table(4)), "--data-dir", str(tmp_path / "b"), "--json"))
    for d in ("a", "b"):  # the file's model, or (a file that names none) the configured one: tiny
        assert snapshot(urls[d])[2] == {"model": {"dim": DIM, "name": "tiny", "pretrained": "random"},
                                        "model_source": {"name": "tiny", "pretrained": "random"},
                                        "audio_key": "audio/random-tiny"}, d
    line = refused(runner("import", str(tmp_path / "tiny.parquet"), "--data-dir", str(tmp_path / "c"),
                          "--model", "ViT-B-32"))
    assert "holds vectors of tiny/random (64-d), not of the configured model ViT-B-32" in line
    assert state(urls["c"]) == (0, 0, 0) and snapshot(urls["c"])[2]["model"] is None


def test_twenty_thousand_rows_import_and_are_found_by_their_vectors(runner, tmp_path, data_dir):
    n = 20_000
    vectors = units(n, seed=1)
    modality = np.array(["image", "audio", "text"])[np.arange(n) % 3]
    file = write(tmp_path, "many.parquet", table(n, vectors, metadata=TINY, modality=pa.array(modality),
                                                 caption=[f"caption {i}" if i % 2 else None for i in range(n)]))
    started = time.perf_counter()
    report = ok(runner("import", file, "--json"))
    seconds = time.perf_counter() - started
    print(f"imported {n} rows in {seconds:.2f}s ({n / seconds:,.0f} rows/s; import alone {report['seconds']}s)")
    assert report["imported"] == n and report["by_modality"] == {"image": 6667, "audio": 6667, "text": 6666}
    library = Library(load_settings({"data_dir": str(data_dir)}, env={}))
    assert library.store.generation() == 1 and library.models.stored()["name"] == "tiny"
    searcher = library.searcher()
    for i in (0, 1, 4_321, 19_999):
        assert searcher.by_vector(vectors[i], 3)[0].item.path == f"/imported/item{i:05d}.jpg"
    assert ok(runner("verify", "--json"))["ok"]


def test_the_indexer_keeps_imported_items_outside_its_roots(runner, indexed, media, tmp_path):
    inside = str(media / "photos" / "not-on-disk.jpg")  # under an indexed root, and no such file: it vanishes
    file = write(tmp_path, "mixed.parquet", table(3, prefix="/elsewhere").set_column(
        0, "path", pa.array(["/elsewhere/a.jpg", "/elsewhere/b.jpg", inside])))
    assert ok(runner("import", file, "--json"))["imported"] == 3
    report = ok(runner("index", str(media), "--json"))
    assert (report["added"], report["updated"], report["removed"], report["unchanged"]) == (0, 0, 1, 12)
    items, _, _ = snapshot(indexed)
    assert {"/elsewhere/a.jpg", "/elsewhere/b.jpg"} <= set(items) and inside not in items
    assert ok(runner("index", str(media / "notes"), "--json"))["removed"] == 0
    assert ok(runner("verify", "--json"))["ok"]


def test_export_refuses_an_empty_or_missing_data_dir(runner, tmp_path):
    assert "no data dir at" in refused(runner("export", str(tmp_path / "x.parquet"), "--data-dir",
                                              str(tmp_path / "none")))
    (tmp_path / "empty").mkdir()
    assert "nothing indexed yet" in refused(runner("export", str(tmp_path / "x.parquet"), "--data-dir",
                                                   str(tmp_path / "empty")))
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "none").exists()
