"""Image and text towers of an open_clip model, producing L2-normalised float32 vectors."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .passages import spans


class ClipEncoder:
    """Wraps a loaded open_clip model. ``preprocess_image`` is thread-safe and meant for decode workers."""

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[[Sequence[str]], torch.Tensor], device: torch.device, identity: dict):
        self.model = model
        self.preprocess_image = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.identity = identity
        self.dim = int(identity["dim"])
        self.dtype = next(model.parameters()).dtype
        # On CUDA (where loading chose fp16) convolutions run fastest on channels-last tensors; the CPU keeps
        # the layout open_clip uses, so its vectors stay equal to open_clip's own.
        self.layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        if device.type == "cuda":
            model.visual.to(memory_format=self.layout)

    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode a batch of already preprocessed images (N, 3, H, W)."""
        with torch.inference_mode():
            features = self.model.encode_image(pixels.to(self.device, self.dtype, memory_format=self.layout))
            return _normalised(features)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(torch.stack([self.preprocess_image(image) for image in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            features = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
            return _normalised(features)


    @property
    def context_tokens(self) -> int:
        """Tokens of text the tower reads, start and end markers aside."""
        return int(getattr(self.tokenizer, "context_length", None) or 77) - 2

    def count_tokens(self, text: str) -> int:
        encode = getattr(self.tokenizer, "encode", None)  # open_clip's SimpleTokenizer
        if encode is None and hasattr(self.tokenizer, "tokenizer"):  # open_clip's HFTokenizer
            return len(self.tokenizer.tokenizer.encode(text, add_special_tokens=False))
        if encode is None:  # any other: the tokens it keeps, markers aside (a full row may have been cut)
            return int((self.tokenizer([text]) != 0).sum()) - 2
        return len(encode(text))

    def passages(self, text: str) -> list[tuple[int, int]]:
        """Character ranges of the windows of ``text`` that each fit the tower; [] when all of it fits."""
        return spans(text, self.count_tokens, self.context_tokens)


def _normalised(features: torch.Tensor) -> np.ndarray:
    return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)
