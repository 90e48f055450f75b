"""Generated coloured shapes with captions, and a `tiny` open_clip model trained on them in seconds.

Two independent attributes, colour and shape, drawn with Pillow at jittered places and sizes on grey
noise. Captions name both ("a red circle") or one ("red", "a circle"), so the text tower learns each
attribute on its own and a picture lands near the words for both of its attributes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # the `tiny` config's image size: its eval preprocess leaves such a picture as it is
COLOURS = {"red": (215, 35, 35), "green": (35, 175, 55), "blue": (40, 70, 220), "yellow": (235, 215, 40)}
SHAPES = ("circle", "triangle", "cross")  # picture() also draws "square": a short training confuses it with circles
JITTER = 5  # pixels off centre: the tiny ViT (16-pixel patches, 2 layers) learns shapes slowly when they wander
HELD_OUT = 10**9  # training draws pictures with seeds below this; held-out pictures use seeds from it up


def picture(colour: str, shape: str, seed: int) -> Image.Image:
    """A `colour` `shape` of random size, near the centre, on grey noise; the same seed, the same picture."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(rng.integers(90, 160), 10, (SIZE, SIZE, 1)) + rng.normal(0, 4, (SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour])
    radius = int(rng.integers(19, 26))
    cx, cy = (SIZE // 2 + int(rng.integers(-JITTER, JITTER + 1)) for _ in range(2))
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    elif shape == "square":
        side = int(radius * 0.85)
        draw.rectangle((cx - side, cy - side, cx + side, cy + side), fill=fill)
    elif shape == "triangle":
        turn = rng.uniform(-0.3, 0.3)
        draw.polygon([(cx + radius * math.sin(turn + a), cy - radius * math.cos(turn + a))
                      for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)], fill=fill)
    elif shape == "cross":
        arm = max(3, radius // 3)
        draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return image


def caption(colour: str | None, shape: str | None) -> str:
    if colour and shape:
        return f"a {colour} {shape}"
    return colour if colour else f"a {shape}"


def captions() -> list[tuple[str | None, str | None]]:
    """Every caption: each colour alone, each shape alone, each pair."""
    return ([(c, None) for c in COLOURS] + [(None, s) for s in SHAPES]
            + [(c, s) for c in COLOURS for s in SHAPES])


def matches(pictures: list[tuple[str, str]], said: list[tuple[str | None, str | None]]) -> np.ndarray:
    """(pictures, captions) booleans: everything a caption names is true of the picture."""
    return np.array([[(c is None or c == colour) and (s is None or s == shape) for c, s in said]
                     for colour, shape in pictures])


def _encode_text_short(model, tokens):
    """open_clip's CLIP.encode_text on tokens cut after the longest caption's end token. The causal mask
    and end-token pooling make this equal to the full 77-token pass (checked below), at a tenth of the cost."""
    import torch
    n = tokens.shape[1]
    x = model.token_embedding(tokens) + model.positional_embedding[:n]
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)[torch.arange(tokens.shape[0]), tokens.argmax(-1)]
    return x @ model.text_projection


def train_tiny(target: Path, steps: int = 500, batch: int = 64, pool: int = 3072, seed: int = 0,
               lr: float = 1e-3, log: Callable[[str], None] = lambda _: None) -> dict:
    """Train `tiny` from scratch on generated (picture, caption) pairs; save its state dict to `target`
    (a file open_clip.create_model_and_transforms("tiny", pretrained=target) loads).

    The loss is CLIP's symmetric InfoNCE with the model's own logit scale, over the batch's pictures
    and every caption, with soft targets: each caption a picture satisfies ("red", "a circle",
    "a red circle") is its positive, so repeated attributes make no false negatives.
    Returns figures about the run: seconds, the last loss, attribute accuracy on fresh pictures.
    """
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: two threads mostly wait on each other, more so on a busy machine
    try:
        with torch.random.fork_rng(devices=[]):  # seeded here without touching other tests' random state
            return _train(Path(target), steps, batch, pool, seed, lr, log)
    finally:
        torch.set_num_threads(threads)


def _train(target: Path, steps: int, batch: int, pool: int, seed: int, lr: float,
           log: Callable[[str], None]) -> dict:
    import open_clip
    import torch
    import torch.nn.functional as F

    import mmsearch.encoders.loading  # noqa: F401  registers the `tiny` config

    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny")
    tokenizer = open_clip.get_tokenizer("tiny")
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    drawn = [classes[i % len(classes)] for i in range(pool)]
    pixels = torch.stack([preprocess(picture(c, s, seed * pool + i)) for i, (c, s) in enumerate(drawn)])
    said = captions()
    full_tokens = tokenizer([caption(c, s) for c, s in said])
    tokens = full_tokens[:, :int((full_tokens != 0).sum(1).max())]
    positive_all = torch.from_numpy(matches(drawn, said)).float()

    # The token table (49408 × 64, 94% of the weights) stays as initialised: the captions use a dozen of its
    # random rows, and the layers above learn from them; its dense gradient would double each step's time.
    model.token_embedding.weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss_value = float("nan")
    for step in range(1, steps + 1):
        picks = torch.from_numpy(rng.choice(pool, batch, replace=False))
        images = F.normalize(model.encode_image(pixels[picks]), dim=-1)
        texts = F.normalize(_encode_text_short(model, tokens), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * images @ texts.T
        positive = positive_all[picks]
        loss = (-(positive / positive.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
                - (positive / positive.sum(0, keepdim=True).clamp(min=1) * logits.log_softmax(0)).sum(0).mean()) / 2
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_value = loss.item()
        if step % 100 == 0:
            log(f"step {step}: loss {loss_value:.3f}, {time.perf_counter() - started:.0f} s")
    model.eval()

    with torch.inference_mode():
        short = _encode_text_short(model, tokens)
        full = model.encode_text(full_tokens)
        assert torch.allclose(short, full, atol=1e-4), "the short text pass no longer matches open_clip's"
        # Attribute accuracy on fresh pictures: is the nearest colour word, the nearest shape word right?
        fresh = [(c, s) for c, s in classes for _ in range(4)]
        images = F.normalize(model.encode_image(torch.stack(
            [preprocess(picture(c, s, 2 * HELD_OUT + i)) for i, (c, s) in enumerate(fresh)])), dim=-1)
        colour_words = F.normalize(model.encode_text(tokenizer([caption(c, None) for c in COLOURS])), dim=-1)
        shape_words = F.normalize(model.encode_text(tokenizer([caption(None, s) for s in SHAPES])), dim=-1)
        colour_ok = (images @ colour_words.T).argmax(1).numpy() == [list(COLOURS).index(c) for c, _ in fresh]
        shape_ok = (images @ shape_words.T).argmax(1).numpy() == [SHAPES.index(s) for _, s in fresh]
    torch.save(model.state_dict(), target)
    return {"seconds": round(time.perf_counter() - started, 1), "loss": round(loss_value, 3),
            "colour accuracy": float(colour_ok.mean()), "shape accuracy": float(shape_ok.mean())}
