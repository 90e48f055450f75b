"""open_clip fidelity, deterministic tiny weights, clear loading errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from mmsearch.encoders.loading import load_clip_encoder, resolve_spec
from mmsearch.errors import ModelLoadError
from mmsearch.library import Library
from mmsearch.settings import load_settings

from .conftest import ROOT
from .media import picture

TEXTS = ["a photo of a dog on a beach", "sunset over the sea", "Groceries: milk, eggs and bread"]


def test_tiny_vectors_are_normalised_and_shaped():
    encoder = load_clip_encoder(resolve_spec("tiny"), "cpu")
    text = encoder.encode_texts(TEXTS)
    image = encoder.encode_images([picture(1), picture(2)])
    assert text.shape == (3, 64) and image.shape == (2, 64)
    assert text.dtype == np.float32 == image.dtype
    np.testing.assert_allclose(np.linalg.norm(np.vstack([text, image]), axis=1), 1.0, atol=1e-5)
    assert not np.allclose(text[0], text[1])


def test_tiny_weights_are_the_same_in_every_process():
    code = ("import json, sys; sys.path.insert(0, '.');"
            "from encoders.loading import load_clip_encoder, resolve_spec;"
            "e = load_clip_encoder(resolve_spec('tiny'), 'cpu');"
            "print(json.dumps(e.encode_texts(['a red ball']).tolist()))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout) for _ in range(2)]
    here = load_clip_encoder(resolve_spec("tiny"), "cpu").encode_texts(["a red ball"])
    np.testing.assert_array_equal(np.array(runs[0], np.float32), np.array(runs[1], np.float32))
    np.testing.assert_allclose(np.array(runs[0], np.float32), here, atol=1e-6)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    load_clip_encoder(resolve_spec("tiny"), "cpu")
    assert torch.rand(1) == before, "loading must not disturb the caller's random state"


def _stored_vectors(settings, folder) -> dict[str, np.ndarray]:
    library = Library(settings)
    library.run_index([folder])
    out = {}
    for path in folder.iterdir():
        [item_id] = library.store.ids_under(str(path))
        out[path.name] = library.store.item_vector(item_id)
    return out


def _reference(model, preprocess, tokenizer, folder) -> dict[str, np.ndarray]:
    """open_clip's own encode_image(preprocess(image)) / encode_text(tokenizer(text)), normalised."""
    out = {}
    with torch.no_grad():
        for path in folder.iterdir():
            if path.suffix == ".txt":
                features = model.encode_text(tokenizer([path.read_text()]))
            else:
                features = model.encode_image(preprocess(Image.open(path)).unsqueeze(0))
            out[path.name] = torch.nn.functional.normalize(features, dim=-1)[0].numpy()
    return out


def _media(folder):
    folder.mkdir()
    picture(3, (300, 200)).save(folder / "wide.jpg", quality=90)
    picture(4, (150, 260)).save(folder / "tall.png")
    (folder / "note.txt").write_text(TEXTS[0])


def test_fidelity_tiny_preset(tmp_path):
    folder = tmp_path / "media"
    _media(folder)
    settings = load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms("tiny")
    model.eval()
    reference = _reference(model, preprocess, open_clip.get_tokenizer("tiny"), folder)
    stored = _stored_vectors(settings, folder)
    for name, vector in reference.items():
        assert np.abs(stored[name] - vector).max() <= 1e-4, name


def test_fidelity_vit_b_32_from_a_checkpoint_file(tmp_path):
    """The default architecture, loaded the way offline users load published weights: a local file."""
    torch.manual_seed(7)
    original = open_clip.create_model("ViT-B-32")
    checkpoint = tmp_path / "vit-b-32.pt"
    torch.save(original.state_dict(), checkpoint)
    del original
    folder = tmp_path / "media"
    _media(folder)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(checkpoint))
    model.eval()
    reference = _reference(model, preprocess, open_clip.get_tokenizer("ViT-B-32"), folder)
    settings = load_settings({"data_dir": str(tmp_path / "data"), "model": "ViT-B-32",
                              "pretrained": str(checkpoint)}, env={})
    stored = _stored_vectors(settings, folder)
    for name, vector in reference.items():
        assert stored[name].shape == (512,)
        assert np.abs(stored[name] - vector).max() <= 1e-4, name
    identity = Library(settings).models.stored()
    assert identity["name"] == "ViT-B-32" and identity["checksum"].startswith("sha256:")


def test_default_spec_names_published_weights():
    spec = resolve_spec("ViT-B-32")
    assert (spec.pretrained, spec.dim) == ("laion2b_s34b_b79k", 512)
    assert resolve_spec("tiny").pretrained == "random"


def test_unavailable_weights_fail_with_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as caught:
        load_clip_encoder(resolve_spec("ViT-B-32", "laion2b_s34b_b79k"), "cpu")
    message = str(caught.value)
    assert "laion2b_s34b_b79k" in message and "ViT-B-32" in message and "--pretrained FILE" in message
    assert "\n" not in message


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot load weights"):
        load_clip_encoder(resolve_spec("tiny", str(bad)), "cpu")


def test_cuda_device_is_used_when_present_and_refused_when_absent():
    if torch.cuda.is_available():
        encoder = load_clip_encoder(resolve_spec("tiny"), "auto")
        assert encoder.device.type == "cuda" and encoder.dtype == torch.float16
        np.testing.assert_allclose(np.linalg.norm(encoder.encode_texts(TEXTS), axis=1), 1.0, atol=1e-3)
    else:
        assert load_clip_encoder(resolve_spec("tiny"), "auto").device.type == "cpu"
        with pytest.raises(ModelLoadError, match="no CUDA"):
            load_clip_encoder(resolve_spec("tiny"), "cuda")
