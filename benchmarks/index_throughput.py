#!/usr/bin/env python3
"""Indexing throughput: the whole indexer against the bare image model, on the same images.

N distinct photo-like JPEGs are written to a temporary folder once. For each model (random weights,
CPU; speed does not depend on the weights):

(a) raw       every image is decoded and preprocessed (``encoder.preprocess_image``) and stacked into
              batches before the clock starts; after one untimed warm-up batch, the timed part is
              ``encoder.encode_pixels`` over all batches: pure model time.
(b) pipeline  ``Library(settings).run_index([folder])`` into a fresh data dir: scan, read, hash,
              decode and preprocess in worker threads, embed, commit to SQL, refresh the vector
              index. The model is loaded and warmed up (one batch) before the clock starts.

Both are reported in images per second; the ratio (b)/(a) is the share of raw model throughput
the indexer keeps (1.0 means decoding, hashing and writing cost nothing on the critical path).

    python3 benchmarks/index_throughput.py [--n 128] [--models ViT-B-32,tiny] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoders.loading import load_clip_encoder, resolve_spec  # noqa: E402
from indexer.decode import decode_image  # noqa: E402
from mmsearch.library import Library  # noqa: E402
from mmsearch.settings import SETTINGS, load_settings  # noqa: E402

DEFAULT_BATCH = next(s.default for s in SETTINGS if s.name == "batch_size")
TARGET = 0.8  # the pipeline should keep at least this share of raw model throughput


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int, amplitude: float) -> np.ndarray:
    """Low-frequency colour blotches: a coarse random grid upsampled bicubically."""
    width, height = size
    coarse = rng.normal(0, amplitude, (max(2, cells * height // width), cells, 3)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(coarse[..., c]).resize(size, Image.BICUBIC)) for c in range(3)]
    return np.stack(planes, axis=-1)


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A deterministic photo-like picture: gradient sky, blotches, shapes, slight blur and sensor grain."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x / width + np.sin(angle) * y / height
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = start + (end - start) * ramp[..., None]
    pixels += _smooth_noise(rng, size, 8, 40) + _smooth_noise(rng, size, 40, 20)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        box = (x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    grain = rng.normal(0, rng.uniform(3, 9), (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8))


def make_images(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{i:05d}.jpg" for i in range(n)]
    for i, path in enumerate(paths):
        photo(i, size).save(path, "JPEG", quality=90)
    return paths


def raw_throughput(model: str, paths: list[Path], batch_size: int) -> float:
    """Images/s of ``encode_pixels`` alone on pre-decoded, preprocessed, pre-stacked batches."""
    import torch

    encoder = load_clip_encoder(resolve_spec(model, "random"), "cpu")
    tensors = [encoder.preprocess_image(decode_image(path.read_bytes(), 10**9).image) for path in paths]
    batches = [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
    del tensors
    encoder.encode_pixels(batches[0])  # warm-up, untimed
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_pixels(batch)
    return len(paths) / (time.perf_counter() - started)


def pipeline_throughput(model: str, folder: Path, n: int, batch_size: int, workers: int) -> float:
    """Images/s of a full first-time ``run_index`` of the folder, model loading and warm-up excluded."""
    import torch

    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-data-") as data_dir:
        flags = {"data_dir": data_dir, "model": model, "pretrained": "random", "device": "cpu",
                 "batch_size": batch_size, "workers": workers}
        library = Library(load_settings(flags, env={}))
        encoder = library.encoder()
        side = encoder.preprocess_image(Image.new("RGB", (8, 8))).shape[-1]
        encoder.encode_pixels(torch.zeros(min(batch_size, n), 3, side, side))  # warm-up, untimed
        started = time.perf_counter()
        report = library.run_index([str(folder)])
        seconds = time.perf_counter() - started
        summary = report.summary()
        if summary["added"] != n or summary["failed"]:
            raise SystemExit(f"{model}: expected {n} added and none failed, got {summary}: {report.failures[:3]}")
        library.store.engine.dispose()  # close SQLite before the data dir goes away
    return n / seconds


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=128, help="number of images (default 128)")
    parser.add_argument("--models", default="ViT-B-32,tiny", help="comma-separated models (default ViT-B-32,tiny)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"default {DEFAULT_BATCH}")
    parser.add_argument("--size", type=_size, default=(640, 480), help="source image WxH (default 640x480)")
    parser.add_argument("--workers", type=int, default=0, help="indexer decode threads; 0: one per core")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-images-") as tmp:
        folder = Path(tmp) / "photos"
        _log(f"writing {args.n} JPEGs of {args.size[0]}x{args.size[1]} ...")
        paths = make_images(folder, args.n, args.size)
        mean_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            _log(f"{model}: raw model ...")
            raw = raw_throughput(model, paths, args.batch_size)
            gc.collect()
            _log(f"{model}: full pipeline ...")
            pipeline = pipeline_throughput(model, folder, args.n, args.batch_size, args.workers)
            gc.collect()
            rows.append({"model": model, "n": args.n, "raw_images_per_s": round(raw, 3),
                         "pipeline_images_per_s": round(pipeline, 3), "ratio": round(pipeline / raw, 3)})

    context = {"batch_size": args.batch_size, "image_size": list(args.size), "mean_jpeg_kb": round(mean_kb, 1),
               "torch_threads": torch.get_num_threads(), "target_ratio": TARGET}
    if args.json:
        print(json.dumps({**context, "rows": rows}))
        return 0
    print(f"{args.n} JPEGs {args.size[0]}x{args.size[1]} (mean {mean_kb:.0f} KB), batch {args.batch_size}, "
          f"cpu, torch threads {context['torch_threads']}")
    print(f"{'model':<12}{'N':>6}{'raw img/s':>12}{'pipeline img/s':>16}{'ratio (b)/(a)':>15}")
    for row in rows:
        print(f"{row['model']:<12}{row['n']:>6}{row['raw_images_per_s']:>12.2f}"
              f"{row['pipeline_images_per_s']:>16.2f}{row['ratio']:>15.2f}")
    for row in rows:
        print(f"ratio (b)/(a) pipeline/raw for {row['model']}: {row['ratio']:.2f} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
