"""mmsearch command line: index a media folder, search it by words, pictures or items, keep it healthy.

Each module registers its commands on the one group in ``app``; ``main`` is the console script.
"""
from __future__ import annotations

from . import bulk, evaluate, indexing, migrate, models, searching, serving, tagging, training  # noqa: F401  (they add commands)
from .app import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="mmsearch")
