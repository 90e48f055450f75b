"""mmsearch: multimodal retrieval over a media collection in one shared vector space."""

__version__ = "0.1.0"
