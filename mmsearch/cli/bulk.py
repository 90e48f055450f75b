"""Bulk commands: export the collection to one Parquet file, import one (the format: mmsearch.search.bulk).
pyarrow is imported only when one of them runs."""
from __future__ import annotations

from typing import Any

import click

from mmsearch.errors import MMSearchError, ModelMismatchError

from .app import EMPTY, Context, cli, command


@cli.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@command
def export(ctx: Context, file: str) -> None:
    """Write every item that has a vector, with all its vectors, to FILE (Parquet)."""
    from mmsearch.search import bulk
    library = ctx.library(existing=True)
    with library.write_lock():  # no index run changes the collection halfway through
        meta = {key: library.store.get_meta(key) for key in bulk.META}
        if meta["model"] is None:
            raise MMSearchError(EMPTY)
        report = bulk.export_file(library.store, file, meta)
    ctx.emit(report, lambda d: f"exported {d['exported']} items ({d['vectors']} vectors, {d['dim']}-d) to "
             f"{d['path']} in {d['seconds']:.1f}s" + (f"; {d['skipped']} items without a vector (pending or "
                                                      f"failed) left out" if d["skipped"] else ""))


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@command
def import_(ctx: Context, file: str) -> None:
    """Add the items of FILE (Parquet, as 'export' writes it) with their vectors; their files need not exist.
    A bad row refuses the whole file, and nothing is written."""
    from mmsearch.search import bulk
    source = bulk.ParquetSource(file)  # not a Parquet file, or no such file: before any data dir is made
    library = ctx.library()
    with library.write_lock():
        meta, fresh = _target(ctx, library, source)
        report = bulk.import_file(library.store, source, meta, fresh)
        library.index(refresh=True)
    ctx.emit(report, lambda d: f"imported {d['imported']} items ({d['vectors']} vectors) in {d['seconds']:.1f}s"
             + (f"; ignored columns: {', '.join(d['ignored_columns'])}" if d["ignored_columns"] else ""))


def _target(ctx: Context, library: Any, source: Any) -> tuple[dict[str, Any], bool]:
    """The data dir's model entries, and whether it is fresh. A fresh one takes the file's model, or (a file
    that names none) the configured one, as 'index' would; a configured model the file's vectors are not
    of is refused."""
    from mmsearch.encoders.identity import describe, encoder_key
    from mmsearch.search.bulk import META
    settings, models, carried = ctx.settings, library.models, source.meta
    stored = {key: library.store.get_meta(key) for key in META}
    if stored["model"] is not None:
        return stored, False
    if carried.get("model"):
        origin = carried.get("model_source") or {"name": carried["model"]["name"],
                                                 "pretrained": carried["model"].get("pretrained", "")}
        other = settings.explicit("model") and settings.model != origin.get("name") or \
            settings.explicit("pretrained") and settings.pretrained != origin.get("pretrained")
        if other and models.spec().identity() != carried["model"]:
            raise ModelMismatchError(f"{source.path} holds vectors of {describe(carried['model'])}, not of the "
                                     f"configured model {settings.model}: leave --model out to take the file's")
        return {**{key: carried.get(key) for key in META}, "model_source": origin}, True
    spec, tower = models.spec(), models.audio_identity()
    return {"model": spec.identity(), "model_source": {"name": spec.name, "pretrained": spec.pretrained},
            "audio_key": encoder_key(tower) if tower else None, "audio_tower": None}, True
