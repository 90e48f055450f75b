"""models fetch: download a model's weights ahead of time, so a first index or search needs no network."""
from __future__ import annotations

from .app import Context, cli, command


@cli.group()
def models() -> None:
    """Model weights: fetch them ahead of time."""


@models.command()
@command
def fetch(ctx: Context) -> None:
    """Download the weights of --model / --pretrained (default: the configured model) into the hub cache
    (MMSEARCH_CACHE_DIR, else the Hugging Face default) and say where they are. Copy that cache to a
    machine without the network and set HF_HUB_OFFLINE=1 there."""
    # Imported here: every other command's start-up stays free of torch and open_clip.
    from mmsearch.encoders.identity import RANDOM
    from mmsearch.encoders.loading import resolve_spec
    from mmsearch.encoders.weights import weights_file

    spec = resolve_spec(ctx.settings.model, ctx.settings.pretrained)
    document = {"model": spec.name, "pretrained": spec.pretrained, "path": None, "downloaded": False}
    if spec.is_file:
        document["path"] = spec.pretrained
    elif spec.pretrained != RANDOM:
        document["path"], document["downloaded"] = weights_file(spec, ctx.settings.cache_dir or None)
    ctx.emit(document, _describe)


def _describe(d: dict) -> str:
    name = f"{d['model']}/{d['pretrained']}"
    if d["path"] is None:
        return f"{d['model']} uses random weights (the same in every process): nothing to download"
    if d["path"] == d["pretrained"]:
        return f"{d['model']} uses the local file {d['path']}: nothing to download"
    return f"{name} {'downloaded to' if d['downloaded'] else 'already in the cache at'} {d['path']}"

