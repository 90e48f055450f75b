"""Fitting a linear bridge between two embedding spaces, on synthetic spaces with a known relation."""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.encoders.bridge import apply_map, fit_map, load_bridge, retrieval_r1, save_bridge
from mmsearch.errors import ModelLoadError


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def spaces():
    rng = np.random.default_rng(0)
    source = unit(rng.normal(size=(400, 32)))
    rotation, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    target = unit(source @ rotation + rng.normal(scale=0.02, size=(400, 32)))
    return source, target, rotation


@pytest.mark.parametrize("method", ["procrustes", "lstsq"])
def test_map_recovers_a_rotation_and_generalises(spaces, method):
    source, target, rotation = spaces
    weights = fit_map(source[:300], target[:300], method)
    assert np.abs(weights - rotation).max() < 0.05
    held_source, held_target = source[300:], target[300:]
    cosines = np.sum(apply_map(held_source, weights) * held_target, axis=1)
    assert cosines.mean() > 0.99
    assert retrieval_r1(held_source @ weights, held_target) > 0.95
    assert retrieval_r1(held_source, held_target) < 0.2  # without the map the spaces do not line up


def test_procrustes_across_widths_keeps_pairing():
    rng = np.random.default_rng(1)
    source = unit(rng.normal(size=(300, 24)))
    lift, _ = np.linalg.qr(rng.normal(size=(48, 24)))  # an isometric embedding of 24-d into 48-d
    target = unit(source @ lift.T)
    weights = fit_map(source[:200], target[:200], "procrustes")
    assert weights.shape == (24, 48)
    assert retrieval_r1(source[200:] @ weights, target[200:]) > 0.95


def test_bridge_file_round_trip(tmp_path, spaces):
    source, target, _ = spaces
    weights = fit_map(source, target)
    path = tmp_path / "clap.bridge.safetensors"
    save_bridge(path, weights, {"clap_checkpoint": "/x/clap.pt", "captions": 400})
    loaded, meta = load_bridge(path)
    np.testing.assert_array_equal(loaded, weights)
    assert meta["captions"] == 400
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(ModelLoadError):
        load_bridge(tmp_path / "junk")


def test_bad_inputs():
    with pytest.raises(ValueError):
        fit_map(np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError):
        fit_map(np.zeros((5, 4)), np.zeros((5, 4)), "magic")


class StandInClap:
    """Plays CLAP's part: its space is ours under a fixed rotation, so a good bridge must undo it.
    (The real LAION-CLAP weights cannot be downloaded on the test machines.)"""

    def __init__(self, library, rotation):
        self.library, self.rotation = library, rotation

    def get_text_embedding(self, texts, use_tensor=False):
        return self.library.encoder().encode_texts(list(texts)) @ self.rotation

    def get_audio_embedding_from_data(self, x, use_tensor=False):
        from mmsearch.encoders.audio import AudioEncoder, build_tower, default_config
        tower = AudioEncoder(build_tower(default_config(64, small=True)), self.library.encoder().device, {})
        return tower.encode_waves([x[0][::3]]) @ self.rotation  # 48 kHz → 16 kHz


def test_fit_clap_bridge_plumbing(runner, settings, tmp_path, monkeypatch):
    import json

    from mmsearch.encoders import bridge
    from mmsearch.library import Library

    from .media import tone_wav
    media = tmp_path / "media"
    media.mkdir()
    tone_wav(media / "beep.wav", 440, 1.0)
    assert runner("index", str(media), "--json").exit_code == 0
    library = Library(settings)
    [beep] = library.store.ids_under(str(media / "beep.wav"))
    before = library.store.item_vector(beep)
    rotation, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(64, 64)))
    monkeypatch.setattr(bridge, "load_clap", lambda checkpoint, device="cpu": StandInClap(library, rotation))
    checkpoint = tmp_path / "clap.pt"
    checkpoint.write_bytes(b"stand-in")
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(f"sound number {i} of a {w}" for i, w in enumerate(
        ["dog", "bell", "car", "bird", "drum", "rain", "wind", "train"] * 12)))
    result = runner("fit-clap-bridge", str(checkpoint), str(captions), "--json")
    assert result.exit_code == 0, result.stderr
    fitted = json.loads(result.stdout)
    assert fitted["heldout_text_r1"] > 0.9 and fitted["captions"] == 96
    report = json.loads(runner("index", str(media), "--json").stdout)
    assert report["updated"] == 1, "sounds are re-embedded through the bridge"
    after = Library(settings).store.item_vector(beep)
    assert float(after @ before) > 0.95  # CLAP(rotated) → bridge → back where our own tower puts it
    assert runner("verify").exit_code == 0


class WindowClap:
    """Records the (N, T) arrays CLAP is given; embeds a window as its length and mean level."""

    def __init__(self):
        self.calls = []

    def get_audio_embedding_from_data(self, x, use_tensor=False):
        self.calls.append(x.shape)
        return np.stack([[len(w) / 480_000, float(np.abs(w).mean()), 1.0] for w in x]).astype(np.float32)


def test_clap_encoder_cuts_long_sounds_into_its_10_s_windows():
    """CLAP crops anything longer than 10 s at random: mmsearch embeds every 10 s window whole instead, so the
    vector is deterministic and a long sound has segments, like the own tower's."""
    from mmsearch.encoders.bridge import CLAP_RATE, ClapAudioEncoder
    clap = WindowClap()
    encoder = ClapAudioEncoder(clap, np.eye(3, dtype=np.float32), {"name": "audio"})
    short, long = np.full(CLAP_RATE * 3, 0.1, np.float32), np.full(CLAP_RATE * 25, 0.2, np.float32)
    one, many = encoder.embed_waves([short, long])
    assert one.segments.shape == (0, 3) and one.spans == []
    assert many.segments.shape == (3, 3) and many.spans == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert clap.calls == [(1, CLAP_RATE * 3), (2, CLAP_RATE * 10), (1, CLAP_RATE * 5)]
    assert np.allclose(np.linalg.norm(many.vector), 1) and np.allclose(many.vector, many.segments.mean(0) /
                                                                       np.linalg.norm(many.segments.mean(0)))
    assert encoder.encode_waves([short]).shape == (1, 3)


def test_load_clap_without_the_package_or_the_file(monkeypatch, tmp_path):
    import sys

    from mmsearch.encoders.bridge import load_clap
    monkeypatch.setitem(sys.modules, "laion_clap", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'mmsearch\[clap\]'"):
        load_clap(None)
    monkeypatch.setitem(sys.modules, "laion_clap", object())
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_clap(str(tmp_path / "missing.pt"))
