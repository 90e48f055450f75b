#!/usr/bin/env python3
"""Audio indexing: peak memory of a long sound against a short one, and audio index throughput.

Memory. A LONG (default 30-minute) and a SHORT (default 1-minute) sound file are written in chunks
(the generator holds 10 seconds at a time). Each is indexed by ``Library(settings).run_index`` into a
fresh data dir (model tiny, random-tiny audio tower) in a child process of its own, so that every
figure belongs to one run:

  rss before     resident memory after imports, model loading and one warm-up window, just before
                 ``run_index`` starts
  peak rss       ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the process's peak, loading included
  sampled peak   the highest resident memory seen by a thread reading /proc/self/statm every 2 ms
                 while ``run_index`` ran; "indexing +" is that minus "rss before"
  tracemalloc    peak of Python/NumPy allocations traced during ``run_index`` (torch's own tensors
                 are not traced)
  embedded s     seconds of sound actually handed to the audio tower (``max_audio_seconds`` caps it)

With ``--many K`` (default 8) a third run indexes K files of ``--many-minutes`` (default 10) in one
folder: the cap bounds each sound, but decoded sounds wait in the indexer's batch together.

Throughput ("audio row", as benchmarks/index_throughput.py does for images). N short sounds
(default 64 x 5 s) are written as files once, then:

  (a)  raw tower   the decoded waveforms are cut into windows before the clock starts; the timed part
                   is the tower alone on batches of ``--window-batch`` windows (windows of different
                   sounds share a batch): pure model time
  (a2) encoder     ``AudioEncoder.encode_waves`` on the decoded waveforms, ``--batch-size`` sounds per
                   call as the indexer forms them (windowing, per-sound batches, pooling)
  (b)  pipeline    a first-time ``run_index`` of the folder into a fresh data dir (scan, read, hash,
                   decode and resample in worker threads, embed, commit to SQL, refresh the vector
                   index), encoders loaded and warmed up before the clock starts

in sounds per second and seconds of audio per second; (b)/(a) is the share of raw tower throughput
the indexer keeps.

    python3 benchmarks/audio_memory.py [--long-minutes 30] [--short-minutes 1] [--rate 44100]
        [--format wav|flac] [--many 8] [--many-minutes 10] [--n 64] [--seconds 5] [--repeat 1]
        [--skip-memory] [--skip-throughput]
"""
from __future__ import annotations

import argparse
import fractions
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import wave as wavelib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by index_throughput.py

from timing import CallTimer  # noqa: E402

CHUNK_SECONDS = 10.0
MB = 1024 * 1024


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- generated sound --------------------------------------------------------------------------------

def _chunk(index: int, rate: int, seconds: float) -> np.ndarray:
    """Ten seconds of a changing scene: a drifting tone, a chord, clicks and some noise."""
    rng = np.random.default_rng(index)
    t = np.arange(int(rate * seconds)) / rate
    base = rng.uniform(80, 1200)
    out = 0.25 * np.sin(2 * np.pi * (base * t + rng.uniform(-20, 20) * t ** 2 / 2))
    out += 0.1 * sum(np.sin(2 * np.pi * base * ratio * t) for ratio in (1.25, 1.5))
    out += rng.normal(0, rng.uniform(0.005, 0.05), t.size)
    clicks = rng.uniform(0, seconds, int(rng.integers(0, 20)))
    for start in (clicks * rate).astype(int):
        out[start:start + 40] += 0.5 * np.hanning(min(40, t.size - start))
    return np.clip(out, -0.99, 0.99).astype(np.float32)


def write_sound(path: Path, seconds: float, rate: int, seed: int = 0) -> None:
    """A mono 16-bit WAV or FLAC of ``seconds`` seconds, written 10 seconds at a time."""
    chunks = int(np.ceil(seconds / CHUNK_SECONDS))
    sizes = [min(CHUNK_SECONDS, seconds - i * CHUNK_SECONDS) for i in range(chunks)]
    if path.suffix == ".wav":
        with wavelib.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            for i, size in enumerate(sizes):
                out.writeframes((_chunk(seed * 100_000 + i, rate, size) * 32767).astype("<i2").tobytes())
        return
    import av
    with av.open(str(path), "w", format=path.suffix.lstrip(".")) as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        stream.codec_context.format = "s16"
        pts = 0
        for i, size in enumerate(sizes):
            samples = (_chunk(seed * 100_000 + i, rate, size) * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, pts, fractions.Fraction(1, rate)
            pts += samples.shape[1]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# --- memory (one child process per file) ----------------------------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class _Sampler(threading.Thread):
    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True)
        self.interval, self.peak, self.samples = interval, 0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self.samples += 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, _rss_bytes())


def child_memory(path: str, device: str, max_audio_seconds: float | None) -> dict:
    """Runs in a fresh process: index one file into a fresh data dir and measure."""
    from sqlalchemy import select

    from mmsearch.library import Library
    from mmsearch.settings import load_settings
    from mmsearch.search.tables import Item

    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-audio-data-") as data_dir:
        flags = {"data_dir": data_dir, "model": "tiny", "device": device}
        if max_audio_seconds is not None:
            flags["max_audio_seconds"] = max_audio_seconds
        library = Library(load_settings(flags, env={}))
        library.encoder()
        encoder = library.audio_encoder()
        encoder.encode_waves([np.zeros(encoder.config.window_samples, np.float32)])  # warm-up
        embedded = []
        encode = encoder.encode_waves

        def counting(waves):
            embedded.extend(len(w) for w in waves)
            return encode(waves)

        encoder.encode_waves = counting
        gc.collect()
        before, maxrss_before = _rss_bytes(), _maxrss_bytes()
        sampler = _Sampler()
        tracemalloc.start()
        sampler.start()
        started = time.perf_counter()
        report = library.run_index([path])
        seconds = time.perf_counter() - started
        sampler.stop()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        with library.store.session() as session:
            items = [(i.modality, i.status, i.duration, i.error) for i in session.scalars(select(Item))]
        library.store.engine.dispose()
    return {"rss_before_mb": before / MB,
            "maxrss_before_mb": maxrss_before / MB, "peak_rss_mb": _maxrss_bytes() / MB,
            "sampled_peak_mb": sampler.peak / MB, "indexing_mb": (sampler.peak - before) / MB,
            "tracemalloc_peak_mb": traced_peak / MB, "samples": sampler.samples, "seconds": seconds,
            "items": len(items), "status": [s for _, s, _, _ in items], "errors": [e for *_, e in items if e],
            "stored_duration_s": sum(d or 0 for _, _, d, _ in items),
            "embedded_s": sum(embedded) / encoder.config.sample_rate, "embedded_sounds": len(embedded),
            "windows": sum(-(-n // encoder.config.window_samples) for n in embedded),
            "max_audio_seconds": library.settings.max_audio_seconds, "summary": report.summary()}


def measure_memory(path: Path, device: str, max_audio_seconds: float | None) -> dict:
    command = [sys.executable, __file__, "--child-memory", str(path), "--device", device]
    if max_audio_seconds is not None:
        command += ["--max-audio-seconds", str(max_audio_seconds)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"memory child failed for {path}:\n{run.stderr}")
    _log(run.stderr.strip()) if run.stderr.strip() else None
    return json.loads(run.stdout.strip().splitlines()[-1])


# --- throughput -----------------------------------------------------------------------------------

def make_sounds(folder: Path, n: int, seconds: float, rate: int, ext: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"sound_{i:04d}{ext}" for i in range(n)]
    for i, path in enumerate(paths):
        write_sound(path, seconds, rate, seed=1000 + i)
    return paths


def raw_tower(encoder, waves: list[np.ndarray], window_batch: int, repeat: int) -> float:
    """(a) Seconds of wall time of the tower alone over every window, windows batched across sounds."""
    import torch

    from mmsearch.encoders.audio import windows
    stacked = np.concatenate([windows(w, encoder.config) for w in waves])
    batches = [torch.from_numpy(stacked[i:i + window_batch]).to(encoder.device)
               for i in range(0, len(stacked), window_batch)]
    best = float("inf")
    with torch.inference_mode():
        encoder.tower(batches[0])  # warm-up
        for _ in range(repeat):
            started = time.perf_counter()
            for batch in batches:
                encoder.tower(batch).cpu()
            best = min(best, time.perf_counter() - started)
    return best


def encoder_calls(encoder, waves: list[np.ndarray], batch_size: int, repeat: int) -> float:
    """(a') Seconds of ``encode_waves`` over the sounds, ``batch_size`` sounds per call."""
    encoder.encode_waves(waves[:1])
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for i in range(0, len(waves), batch_size):
            encoder.encode_waves(waves[i:i + batch_size])
        best = min(best, time.perf_counter() - started)
    return best


def pipeline(folder: Path, n: int, batch_size: int, workers: int, device: str) -> tuple[float, float]:
    """(b) Seconds of a first-time ``run_index`` of the folder, and the share of it inside the tower."""
    from mmsearch.library import Library
    from mmsearch.settings import load_settings
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-audio-data-") as data_dir:
        flags = {"data_dir": data_dir, "model": "tiny", "device": device, "batch_size": batch_size,
                 "workers": workers}
        library = Library(load_settings(flags, env={}))
        library.encoder()
        encoder = library.audio_encoder()
        encoder.encode_waves([np.zeros(encoder.config.window_samples * 2, np.float32)])
        in_model = CallTimer(encoder, "encode_waves")
        started = time.perf_counter()
        report = library.run_index([str(folder)])
        seconds = time.perf_counter() - started
        library.store.engine.dispose()
    summary = report.summary()
    if summary["added"] != n or summary["failed"]:
        raise SystemExit(f"expected {n} sounds added and none failed, got {summary}: {report.failures[:3]}")
    return seconds, in_model.seconds / seconds


def measure_throughput(args) -> dict:
    import torch

    from mmsearch.encoders.audio import AudioEncoder, build_tower, default_config
    from mmsearch.encoders.loading import resolve_spec
    from mmsearch.indexer.decode import decode_audio
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-audio-files-") as tmp:
        ext = "." + args.format
        _log(f"writing {args.n} sounds of {args.seconds:g} s ({args.rate} Hz mono {args.format}) ...")
        paths = make_sounds(Path(tmp) / "sounds", args.n, args.seconds, args.rate, ext)
        dim = resolve_spec("tiny", "random").dim
        encoder = AudioEncoder(build_tower(default_config(dim, small=True)), torch.device(args.device),
                               {"name": "audio", "pretrained": "random-tiny", "dim": dim})
        waves = [decode_audio(p.read_bytes(), encoder.config.sample_rate, 600).wave for p in paths]
        audio_seconds = sum(len(w) for w in waves) / encoder.config.sample_rate
        raws, calls, pipes = [], [], []
        for round_ in range(max(1, args.repeat)):
            for side in ("raw", "encoder", "pipeline") if round_ % 2 == 0 else ("pipeline", "encoder", "raw"):
                _log(f"audio throughput: {side} ({round_ + 1}/{args.repeat}) ...")
                if side == "raw":
                    raws.append(raw_tower(encoder, waves, args.window_batch, 1))
                elif side == "encoder":
                    calls.append(encoder_calls(encoder, waves, args.batch_size, 1))
                else:
                    pipes.append(pipeline(paths[0].parent, len(paths), args.batch_size, args.workers, args.device))
                    gc.collect()
        raw, call = min(raws), min(calls)
        pipe, share = min(pipes)
    return {"n": args.n, "seconds_each": args.seconds, "audio_seconds": audio_seconds,
            "windows": sum(-(-len(w) // encoder.config.window_samples) for w in waves),
            "raw_sounds_per_s": args.n / raw, "encoder_sounds_per_s": args.n / call,
            "pipeline_sounds_per_s": args.n / pipe, "raw_audio_x": audio_seconds / raw,
            "encoder_audio_x": audio_seconds / call, "pipeline_audio_x": audio_seconds / pipe,
            "ratio": raw / pipe, "ratio_encoder": call / pipe, "encoder_vs_raw": raw / call,
            "pipeline_model_share": share, "all_raw_s": raws, "all_encoder_s": calls,
            "all_pipeline_s": [s for s, _ in pipes]}


# --- report ---------------------------------------------------------------------------------------

def print_memory(memory: dict, spec: str) -> None:
    columns = [("long", f"{memory['long_minutes']:g} min"), ("short", f"{memory['short_minutes']:g} min")]
    if "many" in memory and isinstance(memory["many"], dict):
        columns.append(("many", f"{memory['many_count']}x{memory['many_minutes']:g} min"))
    long_, short = memory["long"], memory["short"]
    print(f"memory: {spec}, model tiny, each run in a fresh process and data dir")
    rows = [("files size (MiB)", "file_mb", "{:.1f}"), ("items", "items", "{}"), ("ok", "status", None),
            ("stored duration (s)", "stored_duration_s", "{:.1f}"), ("embedded (s)", "embedded_s", "{:.1f}"),
            ("max_audio_seconds", "max_audio_seconds", "{:g}"), ("windows embedded", "windows", "{}"),
            ("index time (s)", "seconds", "{:.2f}"), ("rss before (MiB)", "rss_before_mb", "{:.1f}"),
            ("peak rss, ru_maxrss (MiB)", "peak_rss_mb", "{:.1f}"),
            ("sampled peak rss (MiB)", "sampled_peak_mb", "{:.1f}"),
            ("indexing + (MiB)", "indexing_mb", "{:.1f}"), ("tracemalloc peak (MiB)", "tracemalloc_peak_mb", "{:.1f}")]
    print(f"{'':<28}" + "".join(f"{head:>14}" for _, head in columns) + f"{'long/short':>12}")
    for label, key, fmt in rows:
        cells = []
        for name, _ in columns:
            value = memory[name][key]
            cells.append(str(value.count("ok")) if fmt is None else fmt.format(value))
        a, b = long_[key], short[key]
        ratio = f"{a / b:>12.2f}" if isinstance(a, float) and isinstance(b, float) and b else ""
        print(f"{label:<28}" + "".join(f"{c:>14}" for c in cells) + ratio)
    print(f"peak memory ratio long/short: ru_maxrss {long_['peak_rss_mb'] / short['peak_rss_mb']:.2f}, "
          f"sampled {long_['sampled_peak_mb'] / short['sampled_peak_mb']:.2f}, "
          f"indexing + {long_['indexing_mb'] / max(short['indexing_mb'], 1e-9):.2f}, "
          f"tracemalloc {long_['tracemalloc_peak_mb'] / max(short['tracemalloc_peak_mb'], 1e-9):.2f}")
    one = long_["items"] == 1 and long_["status"] == ["ok"]
    print(f"{columns[0][1]} file gives one item: {'yes' if one else 'NO'}")


def print_throughput(row: dict, args, device: str) -> None:
    import torch
    print(f"audio throughput: {row['n']} sounds x {row['seconds_each']:g} s ({row['windows']} windows), "
          f"{args.rate} Hz mono {args.format}, batch {args.batch_size} sounds, tower batch {args.window_batch} "
          f"windows, {device} x{os.cpu_count()}, torch threads {torch.get_num_threads()}, best of {args.repeat}")
    print(f"{'model':<10}{'N':>5}{'(a) raw tower/s':>17}{'(a2) encoder/s':>16}{'(b) pipeline/s':>16}"
          f"{'(b)/(a)':>9}{'(b)/(a2)':>10}{'model share of (b)':>20}")
    print(f"{'tiny-audio':<10}{row['n']:>5}{row['raw_sounds_per_s']:>17.2f}{row['encoder_sounds_per_s']:>16.2f}"
          f"{row['pipeline_sounds_per_s']:>16.2f}{row['ratio']:>9.2f}{row['ratio_encoder']:>10.2f}"
          f"{row['pipeline_model_share']:>20.0%}")
    print(f"seconds of audio per second: raw {row['raw_audio_x']:.1f}, encoder {row['encoder_audio_x']:.1f}, "
          f"pipeline {row['pipeline_audio_x']:.1f}")
    print(f"ratio (b)/(a) for audio: {row['ratio']:.2f}; (a2)/(a) (encode_waves vs the bare tower): "
          f"{row['encoder_vs_raw']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument("--short-minutes", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=44100, help="sample rate of the written files")
    parser.add_argument("--format", choices=["wav", "flac"], default="wav")
    parser.add_argument("--max-audio-seconds", type=float, help="override the setting (default 600)")
    parser.add_argument("--many", type=int, default=8, help="files in the third memory run; 0: skip it")
    parser.add_argument("--many-minutes", type=float, default=10.0, help="length of each of those files")
    parser.add_argument("--n", type=int, default=64, help="short sounds for the throughput row")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each short sound")
    parser.add_argument("--batch-size", type=int, default=32, help="sounds per indexer batch")
    parser.add_argument("--window-batch", type=int, default=32, help="windows per tower batch for (a)")
    parser.add_argument("--workers", type=int, default=0, help="indexer decode threads; 0: one per core")
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds, best kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory, args.device, args.max_audio_seconds)))
        return 0

    document: dict = {"rate": args.rate, "format": args.format, "device": args.device}
    if not args.skip_memory:
        with tempfile.TemporaryDirectory(prefix="mmsearch-bench-audio-long-") as tmp:
            results = {}
            runs = [("long", args.long_minutes, 1), ("short", args.short_minutes, 1)]
            if args.many:
                runs.append(("many", args.many_minutes, args.many))
            for name, minutes, count in runs:
                folder = Path(tmp) / name
                folder.mkdir()
                _log(f"writing {count} x {minutes:g} minutes of {args.rate} Hz mono {args.format} ...")
                for i in range(count):
                    write_sound(folder / f"{name}_{i}.{args.format}", minutes * 60, args.rate, seed=i)
                target = folder if count > 1 else folder / f"{name}_0.{args.format}"
                _log(f"indexing {target.name} in a fresh process ...")
                results[name] = measure_memory(target, args.device, args.max_audio_seconds)
                results[name]["file_mb"] = sum(p.stat().st_size for p in folder.iterdir()) / MB
                shutil.rmtree(folder)
        document["memory"] = {"long_minutes": args.long_minutes, "short_minutes": args.short_minutes,
                              "many_count": args.many, "many_minutes": args.many_minutes, **results}
    if not args.skip_throughput:
        document["throughput"] = measure_throughput(args)
    if args.json:
        print(json.dumps(document))
        return 0
    if "memory" in document:
        print_memory(document["memory"], f"{args.rate} Hz mono {args.format}")
    if "throughput" in document:
        if "memory" in document:
            print()
        print_throughput(document["throughput"], args, args.device)
    long_ = document.get("memory", {}).get("long")
    return 0 if long_ is None or (long_["items"] == 1 and long_["status"] == ["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
