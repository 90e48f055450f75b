"""``index --audio-model clap`` end to end, offline: a stand-in ``laion_clap`` package in sys.modules plays
LAION-CLAP at its package boundary. Its calls mirror laion-clap 1.1.7's (``CLAP_Module(enable_fusion=False,
device=..., amodel='HTSAT-tiny')``, ``load_ckpt()`` downloading ``630k-audioset-best.pt`` into the package's
own folder when it is not there yet, ``load_ckpt(path)``, ``get_text_embedding``,
``get_audio_embedding_from_data``, printing as it goes), so mmsearch's own code runs unchanged, download
step included. The stand-in's text space is the tiny text tower lifted into 96-d by a fixed isometry (the
bridge must undo it); its audio tower is aligned with its text tower for six generated sound classes: a
sound's band-energy profile picks the classes it resembles, and its embedding is their captions' embedding.
No real CLAP weights are used anywhere here."""
from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import sys
import types
import urllib.error
import wave
from pathlib import Path

import numpy as np
import pytest

from mmsearch.encoders import clap_captions
from mmsearch.encoders.clap_default import bridge_path, clap_source
from .sounds import _chirps  # the same chirps as the generated training set

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
RATE = 16_000
WIDTH = 96  # the stand-in's embedding width (LAION-CLAP's is 512; tiny's is 64)
DEFAULT = "630k-audioset-best.pt"


def _tone(t, freq):
    return np.sin(2 * np.pi * freq * t)


def _chime(rng, t):
    f = 1 + rng.uniform(-0.01, 0.01)
    second = t >= 0.4
    return (_tone(t, 880 * f) * np.exp(-3 * t) + second * _tone(t, 660 * f) * np.exp(-3 * np.maximum(t - 0.4, 0)))


CLASSES = {  # caption -> generator(rng, t)
    "a two-tone doorbell chime": _chime,
    "a steady electronic beep": lambda rng, t: _tone(t, 440 * (1 + rng.uniform(-0.01, 0.01))),
    "a low electrical hum": lambda rng, t: sum(_tone(t, 100 * k) / k for k in (1, 2, 3)),
    "hissing white noise": lambda rng, t: rng.normal(0, 0.5, t.size),
    "birds chirping": _chirps,
    "a high pitched whistle": lambda rng, t: _tone(t, 1800 * (1 + rng.uniform(-0.01, 0.01))),
}
FILES = {"chime.wav": "a two-tone doorbell chime", "beep.wav": "a steady electronic beep",
         "hum.wav": "a low electrical hum", "hiss.wav": "hissing white noise", "birds.wav": "birds chirping",
         "whistle.wav": "a high pitched whistle"}
SAMPLE_CLASS = {"doorbell.wav": "a two-tone doorbell chime", "a440.wav": "a steady electronic beep"}


def clip(caption: str, seed: int, seconds: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    signal = CLASSES[caption](rng, t)
    return signal / (np.abs(signal).max() + 1e-9) * 0.8 + rng.normal(0, 0.01, t.size)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def bands(wave_: np.ndarray, rate: int) -> np.ndarray:
    """The stand-in's audio features: log energy in 40 log-spaced bands, 50 Hz to 7.5 kHz, centred, unit."""
    power = np.abs(np.fft.rfft(np.asarray(wave_, np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(wave_), 1 / rate)
    edges = np.geomspace(50, 7500, 41)
    energy = np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    logs = np.log10(np.maximum(energy, energy.max() * 1e-8 + 1e-20))
    logs -= logs.mean()
    return logs / (np.linalg.norm(logs) + 1e-12)


@functools.cache
def tiny_text():
    from mmsearch.encoders.loading import load_clip_encoder, resolve_spec
    return load_clip_encoder(resolve_spec("tiny", ""), "cpu")


def write_standin_checkpoint(path: Path) -> None:
    """What the stand-in 'downloads': its text isometry and its audio tower's class profiles."""
    lift, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(WIDTH, 64)))
    captions = list(CLASSES)
    profiles = np.stack([bands(clip(c, 1000 + i, 2.0), RATE) for i, c in enumerate(captions)])
    with open(path, "wb") as handle:
        np.savez(handle, lift=lift, profiles=profiles, captions=np.array(captions))


def fake_laion_clap(package_dir: Path, online: bool = True) -> types.ModuleType:
    """A ``laion_clap`` module: what mmsearch imports when the clap extra is installed."""
    module = types.ModuleType("laion_clap")
    module.__file__ = str(package_dir / "__init__.py")
    module.state = types.SimpleNamespace(online=online, downloads=0, inits=0, loads=[], text_rows=0, audio_calls=0)
    state = module.state

    class CLAP_Module:  # noqa: N801 - the real name
        def __init__(self, enable_fusion=False, device=None, amodel="HTSAT-tiny", tmodel="roberta"):
            assert not enable_fusion and amodel == "HTSAT-tiny" and tmodel == "roberta"
            state.inits += 1
            self.enable_fusion, self.device = enable_fusion, device

        def load_ckpt(self, ckpt=None, model_id=-1, verbose=True):
            if ckpt is not None:
                print(f"Load the specified checkpoint {ckpt} from users.")
            else:
                print("Load our best checkpoint in the paper.")
                names = ["630k-best.pt", "630k-audioset-best.pt", "630k-fusion-best.pt",
                         "630k-audioset-fusion-best.pt"]
                ckpt = os.path.join(os.path.dirname(module.__file__), names[1 if model_id == -1 else model_id])
                if os.path.exists(ckpt):
                    print("The checkpoint is already downloaded")
                else:
                    print("Downloading laion_clap weight files...")
                    if not state.online:  # what wget.download (urllib) raises without a network
                        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))
                    write_standin_checkpoint(Path(ckpt))
                    state.downloads += 1
                    print("Download completed!")
            print("Load Checkpoint...")
            with np.load(ckpt) as weights:
                self.lift, self.profiles = weights["lift"], weights["profiles"]
                captions = [str(c) for c in weights["captions"]]
            state.loads.append(str(ckpt))
            self.class_vectors = self._text(captions)

        def _text(self, texts):
            out = tiny_text().encode_texts(list(texts)) @ self.lift.T
            return out / np.linalg.norm(out, axis=1, keepdims=True)

        def get_text_embedding(self, x, tokenizer=None, use_tensor=False):
            state.text_rows += len(x)
            return self._text(x)

        def get_audio_embedding_from_data(self, x, use_tensor=False):
            assert isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype == np.float32
            assert x.shape[1] <= 480_000, "mmsearch cuts sounds into CLAP's 10 s windows itself"
            state.audio_calls += 1
            out = []
            for wave_ in x:
                likeness = self.profiles @ bands(wave_, 48_000)
                weights = np.exp((likeness - likeness.max()) / 0.05)
                vector = weights @ self.class_vectors
                out.append(vector / np.linalg.norm(vector))
            return np.stack(out).astype(np.float32)

    module.CLAP_Module = CLAP_Module
    return module


@pytest.fixture
def clap(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "laion_clap"
    package.mkdir(parents=True)
    module = fake_laion_clap(package)
    monkeypatch.setitem(sys.modules, "laion_clap", module)
    return module


@pytest.fixture
def sounds(tmp_path) -> Path:
    folder = tmp_path / "sounds"
    folder.mkdir()
    for seed, (name, caption) in enumerate(FILES.items()):
        write_wav(folder / name, clip(caption, seed))
    hum = clip("a low electrical hum", 99, 25.0)  # longer than one 10 s CLAP window: three segments
    write_wav(folder / "long-hum.wav", hum)
    return folder


def audio_search(runner, *args):
    result = runner("search", *args, "--modality", "audio", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    return [Path(r["path"]).name for r in json.loads(result.stdout)["results"]]


def bridges(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "audio").glob("clap-*.bridge.safetensors"))


def snapshot(data_dir: Path) -> tuple:
    with sqlite3.connect(data_dir / "mmsearch.db") as db:
        dump = list(db.iterdump())
    return dump, sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if "lock" not in p.name)


def test_clap_out_of_the_box_fits_once_caches_and_finds_sounds_by_words(runner, clap, sounds, data_dir):
    first = runner("index", str(sounds), str(SAMPLES), "--audio-model", "clap", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)  # laion_clap prints as it loads: not on stdout, one JSON document
    assert report["added"] == 7 + 10 and report["failed"] == 0
    corpus = clap_captions.generate()
    assert f"fitting the LAION-CLAP bridge into tiny/random on {len(corpus)} captions" in first.stderr
    assert "Download" not in first.output  # without a terminal, the package's own chatter is dropped
    assert clap.state.downloads == 1 and clap.state.inits == 1 and clap.state.text_rows == len(corpus)
    [bridge] = bridges(data_dir)
    fitted_at = bridge.stat().st_mtime_ns
    stats = json.loads(runner("stats", "--json").stdout)
    assert stats["by_modality"]["audio"] == 9 and stats["pending"] == 0 and stats["vectors"]["segment"] == 3

    for caption in CLASSES:  # words find the sounds of their class through CLAP → bridge
        wanted = {n for n, c in {**FILES, **SAMPLE_CLASS, "long-hum.wav": "a low electrical hum"}.items()
                  if c == caption}
        assert audio_search(runner, caption)[0] in wanted, caption
    assert set(audio_search(runner, "--audio", str(sounds / "chime.wav"))[:2]) == {"chime.wav", "doorbell.wav"}
    assert runner("verify").exit_code == 0

    inits = clap.state.inits  # the --audio query above loaded CLAP once more
    again = runner("index", str(sounds), str(SAMPLES), "--audio-model", "clap", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["unchanged"] == 17
    assert clap.state.text_rows == len(corpus) and clap.state.inits == inits, "cached: no refit, CLAP not even loaded"
    assert bridges(data_dir) == [bridge] and bridge.stat().st_mtime_ns == fitted_at

    write_wav(sounds / "chime-2.wav", clip("a two-tone doorbell chime", 50))
    plain = runner("index", str(sounds), str(SAMPLES), "--json")  # audio_model own: the data dir's tower, the bridge
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["added"] == 1 and json.loads(plain.stdout)["updated"] == 0
    assert clap.state.downloads == 1 and clap.state.text_rows == len(corpus) and clap.state.inits == inits + 1
    assert clap.state.loads[-1] == clap.state.loads[0]  # the downloaded checkpoint, found in the package's folder
    assert audio_search(runner, "a two-tone doorbell chime")[0] in {"chime.wav", "chime-2.wav", "doorbell.wav"}
    assert runner("verify").exit_code == 0


def test_missing_package_is_one_line_and_changes_nothing(runner, data_dir, monkeypatch):
    assert runner("index", str(SAMPLES), "--json").exit_code == 0
    before = snapshot(data_dir)
    monkeypatch.setitem(sys.modules, "laion_clap", None)  # import laion_clap raises ImportError
    result = runner("index", str(SAMPLES), "--audio-model", "clap")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: the CLAP audio model needs the optional package: pip install 'mmsearch[clap]'"]
    error = json.loads(runner("index", str(SAMPLES), "--json", extra_env={"MMSEARCH_AUDIO_MODEL": "clap"}).stdout)
    assert error["error"]["code"] == "model_load"
    assert snapshot(data_dir) == before and not bridges(data_dir)


def test_offline_download_fails_in_one_line_and_a_local_checkpoint_works(runner, clap, data_dir, tmp_path,
                                                                        monkeypatch):
    from mmsearch.encoders import clap_default
    shorter = tmp_path / "captions.txt"  # every eighth shipped caption: the fit on the whole corpus is tested above
    shorter.write_text("\n".join(clap_captions.generate()[::8]) + "\n")
    monkeypatch.setattr(clap_default, "CORPUS", shorter)
    clap.state.online = False
    result = runner("index", str(SAMPLES), "--audio-model", "clap")
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot download the LAION-CLAP checkpoint {DEFAULT} (")
    assert "name resolution" in line and "--audio-checkpoint FILE" in line
    assert json.loads(runner("stats", "--json").stdout)["items"] == 0 and not bridges(data_dir)

    local = tmp_path / "downloaded-elsewhere" / DEFAULT
    local.parent.mkdir()
    write_standin_checkpoint(local)
    result = runner("index", str(SAMPLES), "--audio-model", "clap", "--audio-checkpoint", str(local), "--json")
    assert result.exit_code == 0, result.output
    assert clap.state.downloads == 0 and clap.state.loads == [str(local)]
    [bridge] = bridges(data_dir)
    from mmsearch.encoders.bridge import load_bridge
    _, meta = load_bridge(bridge)
    assert meta["clap_checkpoint"] == str(local) and meta["captions"] == len(clap_captions.generate()[::8])
    assert meta["heldout_text_r1"] > 0.9  # the stand-in's text space is ours lifted: a good map undoes it
    assert audio_search(runner, "a steady electronic beep")[0] == "a440.wav"
    assert runner("verify").exit_code == 0


def test_bad_audio_model_value(runner):
    result = runner("index", str(SAMPLES), extra_env={"MMSEARCH_AUDIO_MODEL": "magic"})
    assert result.exit_code == 1 and "audio_model is 'magic': use own or clap" in result.stderr
    assert runner("index", str(SAMPLES), "--audio-model", "magic").exit_code == 2


def test_the_cache_is_keyed_by_the_image_text_model_and_the_clap_weights(tmp_path):
    tiny = {"name": "tiny", "pretrained": "random", "dim": 64}
    vit = {"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "dim": 512}
    default = clap_source(None)
    assert bridge_path(tmp_path, tiny, default) == bridge_path(tmp_path, dict(tiny), clap_source(None))
    assert bridge_path(tmp_path, tiny, default) != bridge_path(tmp_path, vit, default)
    local = tmp_path / "clap.pt"
    local.write_bytes(b"x")
    assert bridge_path(tmp_path, tiny, clap_source(str(local))) != bridge_path(tmp_path, tiny, default)


def test_the_shipped_corpus_is_generated_licensed_and_packaged():
    text = clap_captions.CORPUS.read_text(encoding="utf-8")
    assert text == clap_captions.render(), "regenerate: python -m mmsearch.encoders.clap_captions"
    header, *captions = text.splitlines()
    assert header.startswith("#") and "CC0" in header
    assert len(captions) >= 3000 and len(set(captions)) == len(captions) and len(text.encode()) <= 300_000
    assert all(2 <= len(c.split()) <= 20 for c in captions)
    from mmsearch.encoders.bridge import read_captions
    assert read_captions(clap_captions.CORPUS) == captions
    setup = (ROOT / "setup.cfg").read_text()
    assert "mmsearch.encoders = model_configs/*.json, data/*.txt" in setup

