"""Audio end to end: every format (and the sound track of video containers) decodes at 16 kHz mono and
indexes to an item with a vector; broken files fail with a reason without stopping the run; long sounds
are the re-normalised mean of their windows; search --audio; the random-tiny tower is the same in every
process; checkpoints round-trip and fail in one line; train-audio resumes; bad manifests fail in one line.
All media are generated here with PyAV."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import wave as wavelib
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from mmsearch.encoders.audio import AudioEncoder, build_tower, default_config, load_tower, save_tower, windows
from mmsearch.indexer.decode import decode_audio
from mmsearch.modalities import AUDIO, EXTENSIONS
from mmsearch.errors import ModelLoadError
from mmsearch.library import Library
from mmsearch.settings import load_settings
from mmsearch.search.tables import CONTENT, FAILED, OK, Item, Vector

from .media import codec, encode
from .sounds import make_training_set

ROOT = Path(__file__).resolve().parents[1]
RATE = 16_000
TINY_DIM = 64
SECONDS = 1.5


# --- generated media --------------------------------------------------------------------------------

def tone(rate: int, seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)) / 1.3


def wav_bytes(samples: np.ndarray, rate: int = RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wavelib.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat((samples * 32767).astype("<i2"), channels).tobytes())
    return buffer.getvalue()


# extension: (container, audio codecs, source rate, channels, video codecs)
FORMATS = {
    "wav": ("wav", ("pcm_s16le",), 44100, 2, None),
    "flac": ("flac", ("flac",), 22050, 1, None),
    "ogg": ("ogg", ("libvorbis", "vorbis"), 44100, 2, None),  # FFmpeg's own Vorbis encoder: stereo only
    "oga": ("ogg", ("flac",), 22050, 1, None),
    "mp3": ("mp3", ("libmp3lame", "mp3"), 44100, 1, None),
    "m4a": ("ipod", ("aac",), 48000, 1, None),
    "opus": ("ogg", ("libopus", "opus"), 48000, 1, None),
    "mp4": ("mp4", ("aac",), 44100, 2, ("libx264", "mpeg4")),
    "mkv": ("matroska", ("libmp3lame", "mp3", "aac"), 44100, 1, ("mpeg4", "libx264")),
    "webm": ("webm", ("libopus", "opus"), 48000, 1, ("libvpx", "vp8", "libvpx-vp9")),
}


def make_format(ext: str, freq: float) -> bytes:
    container, audio_codecs, rate, channels, video_codecs = FORMATS[ext]
    audio = codec(*audio_codecs)
    options = None
    if audio in ("vorbis", "opus"):  # FFmpeg's own encoders are experimental (vorbis: stereo only)
        options = {"strict": "experimental"}
    return encode(container, audio, rate, tone(rate, SECONDS, freq), channels, options,
                  codec(*video_codecs) if video_codecs else None)


def indexable(ext: str) -> bool:
    return f".{ext}" in EXTENSIONS[AUDIO]


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> tuple[Path, dict[str, Path], Library]:
    """One file per format (distinct pitches), indexed once into one data dir."""
    root = tmp_path_factory.mktemp("formats")
    media = root / "media"
    media.mkdir()
    paths = {}
    for i, ext in enumerate(FORMATS):
        paths[ext] = media / f"sound_{ext}.{ext}"
        paths[ext].write_bytes(make_format(ext, 300 + 97 * i))
    settings = load_settings({"data_dir": str(root / "data"), "model": "tiny", "batch_size": 4}, env={})
    library = Library(settings)
    report = library.run_index([media])
    assert report.failed == 0, report.failures
    assert report.added == sum(indexable(ext) for ext in FORMATS)
    return media, paths, library


def items_by_path(library: Library) -> dict[str, tuple[Item, np.ndarray | None]]:
    with library.store.session() as session:
        out = {}
        for item in session.scalars(select(Item)):
            vector = session.get(Vector, (item.id, 0))  # slot 0: the content vector
            out[item.path] = (item, vector.array() if vector is not None else None)
            session.expunge(item)
        return out


# --- (a) formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", list(FORMATS))
def test_every_format_decodes_to_16k_mono(formats, ext):
    _, paths, _ = formats
    _, _, rate, channels, _ = FORMATS[ext]
    decoded = decode_audio(paths[ext].read_bytes(), RATE, 600)
    wave = decoded.wave
    assert wave.dtype == np.float32 and wave.ndim == 1
    # encoder priming/padding (AAC, Vorbis, Opus, MP3) adds a few tens of milliseconds at most
    assert abs(len(wave) - SECONDS * RATE) <= 0.06 * RATE, len(wave)
    meta = decoded.meta
    assert meta["channels"] == channels
    expected_rate = 48000 if "opus" in codec(*FORMATS[ext][1]) else rate  # Opus is always 48 kHz
    assert meta["sample_rate"] == expected_rate
    assert meta["duration"] == pytest.approx(SECONDS, abs=0.06)
    assert meta["mime"]


@pytest.mark.parametrize("ext", list(FORMATS))
def test_every_format_indexes_to_an_item_with_a_vector(formats, ext):
    _, paths, library = formats
    assert indexable(ext), f".{ext} is not in mmsearch.modalities.EXTENSIONS"
    stored = items_by_path(library)
    item, vector = stored[str(paths[ext])]
    decoded = decode_audio(paths[ext].read_bytes(), RATE, 600)
    assert item.modality == "audio" and item.status == OK and item.error is None
    assert vector is not None and vector.shape == (TINY_DIM,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert (item.duration, item.sample_rate, item.channels, item.mime) == (
        decoded.meta["duration"], decoded.meta["sample_rate"], decoded.meta["channels"], decoded.meta["mime"])
    assert np.allclose(vector, library.audio_encoder().encode_waves([decoded.wave])[0], atol=1e-5)


def test_formats_index_cleanly(formats):
    _, _, library = formats
    assert library.verify() == []
    vectors = [v for _, v in items_by_path(library).values()]
    assert len({v.tobytes() for v in vectors}) == len(vectors), "distinct sounds, distinct vectors"


def test_stereo_44k_resamples_to_16k_mono_of_the_right_length_and_pitch():
    data = encode("wav", "pcm_s16le", 44100, tone(44100, 2.0, 1000.0), channels=2)
    decoded = decode_audio(data, RATE, 600)
    assert decoded.meta["sample_rate"] == 44100 and decoded.meta["channels"] == 2
    assert len(decoded.wave) == 2 * RATE
    spectrum = np.abs(np.fft.rfft(decoded.wave))
    assert np.argmax(spectrum) * RATE / len(decoded.wave) == pytest.approx(1000.0, abs=2)
    other_rate = decode_audio(encode("flac", "flac", 22050, tone(22050, 2.0), 1), 8000, 600)
    assert len(other_rate.wave) == 2 * 8000, "the tower's rate, whatever it is"


# --- (b) broken files -------------------------------------------------------------------------------

def test_broken_files_fail_with_a_reason_and_never_stop_the_run(settings, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    mp3 = encode("mp3", codec("libmp3lame", "mp3"), 44100, tone(44100, 2.0), 1)
    (media / "good.wav").write_bytes(wav_bytes(tone(RATE, 1.0, 500)))
    (media / "good.flac").write_bytes(encode("flac", "flac", 22050, tone(22050, 1.0, 700), 1))
    (media / "head.mp3").write_bytes(mp3[:100])  # cut inside the first frame
    (media / "half.mp3").write_bytes(mp3[: len(mp3) // 2])  # cut mid-stream: what decoded may index
    (media / "empty.wav").write_bytes(wav_bytes(np.zeros(0)))  # a header and no samples
    (media / "zero.wav").write_bytes(b"")
    (media / "noise.flac").write_bytes(np.random.default_rng(3).bytes(20_000))
    (media / "silent.wav").write_bytes(wav_bytes(np.zeros(RATE)))
    (media / "silent_video.mp4").write_bytes(
        encode("mp4", None, 0, None, video_codec=codec("libx264", "mpeg4"), seconds=1.0))
    library = Library(settings)
    report = library.run_index([media])
    stored = items_by_path(library)
    assert len(stored) == 9
    failures = dict(report.failures)
    for path, (item, vector) in stored.items():
        if item.status == FAILED:
            assert failures[path] == item.error and item.error.strip() and "\n" not in item.error
            assert vector is None
        else:
            assert item.status == OK and vector is not None, (path, item.status, item.error)
    ok = {Path(p).name for p, (item, _) in stored.items() if item.status == OK}
    assert {"good.wav", "good.flac"} <= ok
    assert report.added + report.failed == 9 and report.failed == len(failures)
    reasons = {Path(p).name: reason for p, reason in failures.items()}
    assert {"head.mp3", "empty.wav", "zero.wav", "noise.flac", "silent_video.mp4"} <= set(reasons)
    assert "no audio stream" in reasons["silent_video.mp4"]
    assert "empty" in reasons["zero.wav"]
    assert library.verify() == []
    again = library.run_index([media])
    assert (again.added, again.updated, again.failed, again.unchanged) == (0, 0, 0, 9), "failures are not retried"


# --- (c) windows and the decode cap -----------------------------------------------------------------

def test_long_sound_is_the_renormalised_mean_of_its_windows(tmp_path):
    config = default_config(TINY_DIM, small=True)
    tower = build_tower(config)
    wave = tone(RATE, 2.6 * config.window_seconds, 330).astype(np.float32)
    wave[len(wave) // 2:] = tone(RATE, 1.3 * config.window_seconds, 2000)[: len(wave) - len(wave) // 2]
    chunks = windows(wave, config)
    assert chunks.shape == (3, config.window_samples)
    assert np.array_equal(chunks.reshape(-1)[: len(wave)], wave) and not chunks.reshape(-1)[len(wave):].any()
    encoder = AudioEncoder(tower, torch.device("cpu"), {}, window_batch=2)  # two batches: 2 + 1 windows
    got = encoder.encode_waves([wave, wave[: config.window_samples // 2]])
    with torch.inference_mode():
        each = tower.eval()(torch.from_numpy(chunks))
        single = tower(torch.from_numpy(windows(wave[: config.window_samples // 2], config)))[0]
    mean = each.mean(dim=0)
    assert np.allclose(got[0], (mean / mean.norm()).numpy(), atol=1e-5)
    assert np.allclose(got[1], single.numpy(), atol=1e-5), "a short sound is one zero-padded window"
    assert float(each[0] @ each[2]) < 0.999, "the windows differ, so the mean is not any one of them"
    assert np.linalg.norm(got, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_indexed_long_file_matches_the_tower_on_its_windows(settings, tmp_path):
    """The whole path: a 44.1 kHz stereo file of several windows, decoded, windowed, pooled, stored."""
    config = default_config(TINY_DIM, small=True)
    media = tmp_path / "media"
    media.mkdir()
    samples = np.concatenate([tone(44100, 3.0, 250), tone(44100, 2.5, 1800)])
    (media / "long.wav").write_bytes(encode("wav", "pcm_s16le", 44100, samples, 2))
    library = Library(settings)
    assert library.run_index([media]).added == 1
    item, vector = items_by_path(library)[str(media / "long.wav")]
    assert item.duration == pytest.approx(5.5) and item.sample_rate == 44100 and item.channels == 2
    wave = decode_audio((media / "long.wav").read_bytes(), RATE, 600).wave
    assert len(wave) == int(5.5 * RATE)
    tower = build_tower(config).eval()
    with torch.inference_mode():
        mean = tower(torch.from_numpy(windows(wave, config))).mean(dim=0)
    assert np.allclose(vector, (mean / mean.norm()).numpy(), atol=1e-5)


def test_max_audio_seconds_caps_the_decoded_length(settings, tmp_path):
    data = encode("flac", "flac", 44100, tone(44100, 5.0), 1)
    full = decode_audio(data, RATE, 600)
    capped = decode_audio(data, RATE, 1.5)
    assert len(full.wave) == 5 * RATE and len(capped.wave) == int(1.5 * RATE)
    assert capped.meta["duration"] == pytest.approx(5.0), "metadata describes the file, not the cap"
    assert np.allclose(capped.wave, full.wave[: len(capped.wave)], atol=1e-4)
    # the setting reaches the indexer and queries
    library = Library(settings.replace(max_audio_seconds=1.5))
    media = tmp_path / "media"
    media.mkdir()
    (media / "five.flac").write_bytes(data)
    library.run_index([media])
    item, vector = items_by_path(library)[str(media / "five.flac")]
    assert item.duration == pytest.approx(5.0)
    expected = library.audio_encoder().encode_waves([capped.wave])[0]
    assert np.allclose(vector, expected, atol=1e-5)
    assert np.allclose(library.embed_query("audio", data)[0], expected, atol=1e-5)
    assert not np.allclose(library.audio_encoder().encode_waves([full.wave])[0], expected, atol=1e-3)


# --- (d) search --audio -----------------------------------------------------------------------------

def test_search_by_sound_finds_itself_first(runner, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for i, freq in enumerate((200, 450, 900, 1800, 3600)):
        (media / f"tone{i}.wav").write_bytes(wav_bytes(tone(RATE, 1.0 + 0.3 * i, freq)))
    (media / "note.txt").write_text("a note about a high whistle")
    (media / "tone3.mp4").write_bytes(make_format("mp4", 1234))
    result = runner("index", str(media), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 6 + indexable("mp4")
    for query in ("tone2.wav", "tone4.wav") + (("tone3.mp4",) if indexable("mp4") else ()):
        found = runner("search", "--audio", str(media / query), "-k", "3", "--json")
        assert found.exit_code == 0, found.stderr
        results = json.loads(found.stdout)["results"]
        assert len(results) == 3
        assert results[0]["path"] == str(media / query) and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    only = runner("search", "--audio", str(media / "tone0.wav"), "--modality", "text", "--json")
    assert [r["modality"] for r in json.loads(only.stdout)["results"]] == ["text"]
    outside = tmp_path / "outside.wav"
    outside.write_bytes(wav_bytes(tone(RATE, 1.0, 600)))
    assert json.loads(runner("search", "--audio", str(outside), "--json").stdout)["results"]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(wav_bytes(np.zeros(RATE)))
    failed = runner("search", "--audio", str(bad))
    assert failed.exit_code == 1 and failed.stderr.count("\n") == 1 and "silent" in failed.stderr


# --- (e) determinism --------------------------------------------------------------------------------

_EMBED_IN_CHILD = """
import hashlib, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
from mmsearch.encoders.audio import AudioEncoder, build_tower, default_config
tower = build_tower(default_config(64, small=True))
digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in tower.state_dict().values())).hexdigest()
t = np.arange(24000) / 16000
wave = (0.3 * np.sin(2 * np.pi * 523 * t) + 0.1 * np.sin(2 * np.pi * 97 * t)).astype(np.float32)
vector = AudioEncoder(tower, torch.device("cpu"), {}).encode_waves([wave])[0]
sys.stdout.write(digest + " " + vector.astype("<f4").tobytes().hex())
"""


def test_random_tiny_tower_is_the_same_in_every_process():
    child = subprocess.run([sys.executable, "-c", _EMBED_IN_CHILD, str(ROOT), str(torch.get_num_threads())],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "1"})
    assert child.returncode == 0, child.stderr
    digest, vector = child.stdout.split()
    there = np.frombuffer(bytes.fromhex(vector), "<f4")
    t = np.arange(24000) / RATE
    wave = (0.3 * np.sin(2 * np.pi * 523 * t) + 0.1 * np.sin(2 * np.pi * 97 * t)).astype(np.float32)
    torch.manual_seed(12345)  # the global RNG must neither matter nor be disturbed
    state = torch.random.get_rng_state()
    here = AudioEncoder(build_tower(default_config(TINY_DIM, small=True)), torch.device("cpu"), {})
    assert torch.equal(torch.random.get_rng_state(), state)
    assert digest == hashlib.sha256(b"".join(v.numpy().tobytes() for v in here.tower.state_dict().values())).hexdigest()
    assert there.shape == (TINY_DIM,)
    assert np.array_equal(here.encode_waves([wave])[0], there), "identical vectors in two processes"
    other_seed = AudioEncoder(build_tower(default_config(TINY_DIM, small=True), seed=1), torch.device("cpu"), {})
    assert not np.allclose(other_seed.encode_waves([wave])[0], there, atol=1e-3)


# --- (f) checkpoints, train-audio ----------------------------------------------------------------------

def test_checkpoint_round_trip_keeps_outputs_and_config(tmp_path):
    config = default_config(TINY_DIM, small=True)
    tower = build_tower(config, seed=7)
    with torch.no_grad():  # running statistics that differ from the defaults must travel too
        tower.input_norm.running_mean.fill_(-3.0)
        tower.input_norm.running_var.fill_(4.0)
    path = tmp_path / "ckpt" / "tower.safetensors"
    save_tower(tower, path, {"epoch": 3, "val_r1": 0.5})
    loaded, extra = load_tower(path)
    assert loaded.config == config
    assert {k: json.loads(v) for k, v in extra.items()} == {"epoch": 3, "val_r1": 0.5}
    waves = torch.from_numpy(np.stack([tone(RATE, config.window_seconds, f) for f in (220, 880)]).astype(np.float32))
    with torch.inference_mode():
        assert torch.equal(tower.eval()(waves), loaded.eval()(waves))
    assert not list(tmp_path.glob("ckpt/*.tmp"))


def test_corrupt_checkpoint_is_a_one_line_model_load_error(tmp_path, runner):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    good = tmp_path / "good.safetensors"
    save_tower(build_tower(default_config(TINY_DIM, small=True)), good)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (garbage, cut, tmp_path / "missing.safetensors"):
        with pytest.raises(ModelLoadError) as caught:
            load_tower(path)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    query = tmp_path / "q.wav"
    query.write_bytes(wav_bytes(tone(RATE, 1.0)))
    result = runner("search", "--audio", str(query), "--audio-checkpoint", str(cut))
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_audio_checkpoint_of_the_wrong_dimension_is_a_clear_error(runner, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.wav").write_bytes(wav_bytes(tone(RATE, 1.0)))
    assert runner("index", str(media)).exit_code == 0
    wrong = tmp_path / "wide.safetensors"
    save_tower(build_tower(default_config(TINY_DIM * 2, small=True)), wrong)
    for args in (("index", str(media)), ("search", "--audio", str(media / "a.wav"))):
        result = runner(*args, "--audio-checkpoint", str(wrong))
        assert result.exit_code == 1, result.stdout
        assert result.stderr.count("\n") == 1
        assert f"{TINY_DIM * 2}-d" in result.stderr and f"{TINY_DIM}-d" in result.stderr
    stats = json.loads(runner("stats", "--json").stdout)
    assert stats["pending"] == 0, "a tower that cannot load must not discard the sounds' vectors"


def test_train_audio_resumes_only_an_interrupted_run_and_fresh_starts_over(runner, tmp_path, data_dir, monkeypatch):
    """A run that finished leaves nothing to resume: the next one is a new run (from the tower it made). A run
    cut short (Ctrl-C in epoch 2 here) resumes after its last whole epoch, unless --fresh."""
    from mmsearch.encoders.audio_training import Trainer
    manifest = make_training_set(tmp_path / "train", per_class=1)
    checkpoint = data_dir / "audio" / "tower.safetensors"
    state = checkpoint.with_name(checkpoint.name + ".state.pt")
    first = runner("train-audio", str(manifest), "--epochs", "2", "--json")
    assert first.exit_code == 0, first.stderr
    assert "resuming" not in first.stderr and "epoch 1:" in first.stderr and "epoch 2:" in first.stderr
    assert json.loads(first.stdout)["epochs"] == 2
    tower, extra = load_tower(checkpoint)
    assert tower.config == default_config(TINY_DIM, small=True) and json.loads(extra["epoch"]) in (1, 2)
    assert not state.exists()

    again = runner("train-audio", str(manifest), "--epochs", "2", "--json")  # finished: not resumed
    assert again.exit_code == 0, again.stderr
    assert "resuming" not in again.stderr and "epoch 1:" in again.stderr and json.loads(again.stdout)["epochs"] == 2

    validate = Trainer.validate

    def interrupt(n: int):
        calls = []

        def validated(self):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return validate(self)
        monkeypatch.setattr(Trainer, "validate", validated)
    interrupt(2)
    cut = runner("train-audio", str(manifest), "--epochs", "4")
    assert cut.exit_code == 130 and "interrupted" in cut.stderr and state.exists()
    monkeypatch.setattr(Trainer, "validate", validate)
    resumed = runner("train-audio", str(manifest), "--epochs", "4", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stderr
    lines = resumed.stderr.splitlines()  # per-epoch lines start "epoch N:"; the summary says "best epoch N:"
    assert not any(line.startswith("epoch 1:") for line in lines)
    assert all(any(line.startswith(f"epoch {n}:") for line in lines) for n in (2, 3, 4))
    assert json.loads(resumed.stdout)["epochs"] == 3 and not state.exists()

    interrupt(2)
    assert runner("train-audio", str(manifest), "--epochs", "4").exit_code == 130 and state.exists()
    monkeypatch.setattr(Trainer, "validate", validate)
    fresh = runner("train-audio", str(manifest), "--epochs", "1", "--fresh", "--json")
    assert fresh.exit_code == 0, fresh.stderr
    assert "resuming" not in fresh.stderr and "epoch 1:" in fresh.stderr
    assert json.loads(fresh.stdout)["epochs"] == 1 and not state.exists()
    load_tower(checkpoint)


def test_bad_manifests_fail_in_one_line(runner, tmp_path):
    root = tmp_path / "train"
    manifest = make_training_set(root, per_class=1)
    lines = manifest.read_text().splitlines()
    missing_file = root / "missing_file.csv"
    missing_file.write_text("\n".join(lines[:3] + ["nowhere.wav,a ghost,"] + lines[3:]) + "\n")
    wrong_columns = root / "wrong_columns.csv"
    wrong_columns.write_text("sound,text\n" + "\n".join(f"class{i}_000.wav,caption {i}" for i in range(6)) + "\n")
    no_caption = root / "no_caption.csv"
    no_caption.write_text("audio,caption\n" + "\n".join(f"class{i}_000.wav," for i in range(6)) + "\n")
    too_few = root / "too_few.csv"
    too_few.write_text("\n".join(lines[:3]) + "\n")
    cases = {missing_file: "nowhere.wav", wrong_columns: "columns", no_caption: "caption",
             too_few: "at least 4", root / "absent.csv": "absent.csv"}
    for path, needle in cases.items():
        result = runner("train-audio", str(path), "--epochs", "1")
        assert result.exit_code == 1, (path, result.stdout)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert needle in result.stderr
