"""Commands that build and keep the index: index, remove, rebuild-index, verify, failed, stats."""
from __future__ import annotations

import json
import sys

import click

from mmsearch.errors import MMSearchError

from .app import EMPTY, Context, cli, command


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--reembed", is_flag=True, help="Accept a model change: re-embed every item with the new model.")
@click.option("--reembed-audio", is_flag=True, help="Re-embed every sound with the current audio tower.")
@click.option("--audio-model", type=click.Choice(["own", "clap"]), default=None,
              help="own: the data dir's own audio tower; clap: LAION-CLAP bridged into this space (downloaded and "
              "fitted on first use, then cached; --audio-checkpoint FILE: a local LAION-CLAP checkpoint) "
              "[setting audio_model, env MMSEARCH_AUDIO_MODEL]")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: decode in threads and embed in this process; ray: decode in Ray tasks and embed in a "
              "pool of model actors (Ray Data), committing here in batches as local does. Ray joins the cluster "
              "in the RAY_ADDRESS environment variable (e.g. ray://head:10001 or head:6379), else starts on this "
              "machine. Needs pip install 'mmsearch[ray]'.")
@click.option("--num-gpus", type=click.FloatRange(0), default=None,
              help="GPUs each model actor reserves (--engine ray; fractions share a GPU) [default: 0, CPU]")
@click.option("--actors", type=click.IntRange(1), default=None,
              help="Model actors (--engine ray) [default: the cluster's GPUs / --num-gpus, or 1 on CPU]")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Files per model batch and per commit [setting batch_size, env MMSEARCH_BATCH_SIZE]")
@command
def index(ctx: Context, paths: tuple[str, ...], reembed: bool, reembed_audio: bool, audio_model: str | None,
          engine: str, num_gpus: float | None, actors: int | None, batch_size: int | None) -> None:
    """Index (or re-index incrementally) the media under PATHS."""
    if engine != "ray" and (num_gpus is not None or actors is not None):
        raise click.UsageError("--num-gpus and --actors are for --engine ray")
    if audio_model:
        ctx.settings = ctx.settings.replace(audio_model=audio_model)
    if batch_size:
        ctx.settings = ctx.settings.replace(batch_size=batch_size)
    library = ctx.library()
    report = library.run_index(paths, reembed=reembed, reembed_audio=reembed_audio,
                               progress=not ctx.as_json and sys.stderr.isatty(), engine=engine,
                               num_gpus=num_gpus or 0.0, actors=actors or 0)
    if not ctx.as_json:
        for path, reason in report.failures:
            click.echo(f"failed: {path}: {reason}", err=True)
        for error in report.scan_errors:
            click.echo(f"skipped: {error}", err=True)
    ctx.emit(report.summary(), lambda d: ", ".join(f"{k} {v}" for k, v in d.items() if k != "seconds")
             + f" in {d['seconds']:.1f}s")


@cli.command()
@command
def stats(ctx: Context) -> None:
    """Counts per modality, pending and failed items, model and vector index."""
    ctx.emit(ctx.library(existing=True).stats(), _format_stats)


@cli.command()
@click.option("-n", "--limit", type=click.IntRange(1), default=100, show_default=True)
@command
def failed(ctx: Context, limit: int) -> None:
    """List files that could not be indexed, with the reason."""
    rows = ctx.library(existing=True).store.failures(limit)
    ctx.emit({"failed": rows}, lambda d: "\n".join(f"{r['path']}: {r['error']}" for r in d["failed"])
             or "no failed files")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@command
def remove(ctx: Context, paths: tuple[str, ...]) -> None:
    """Remove the items at PATHS (files, or everything under folders) from the index. Files are not touched."""
    removed = ctx.library(existing=True).remove(paths)
    if removed == 0:
        raise MMSearchError(f"nothing indexed at {', '.join(paths)}")
    ctx.emit({"removed": removed}, lambda d: f"removed {d['removed']} item(s)")


@cli.command("rebuild-index")
@command
def rebuild_index(ctx: Context) -> None:
    """Rebuild the vector index file from the vectors stored in SQL."""
    library = ctx.library(existing=True)
    with library.write_lock():
        report = library.rebuild_index()
    ctx.emit({"rebuilt": True, "ntotal": report.added}, lambda d: f"rebuilt vector index: {d['ntotal']} vectors")


@cli.command()
@click.option("--repair", is_flag=True, help="Rebuild every cache from SQL (the vector index files; thumbnails and "
              "waveforms, drawn again on demand), then verify again. Problems in SQL itself are reported, not repaired.")
@command
def verify(ctx: Context, repair: bool) -> None:
    """Check that the vector index files and the picture cache agree with SQL; exit 1 when not."""
    library = ctx.library(existing=True)
    if repair:
        document = library.repair()
        problems = document["problems"]
        ctx.emit({"ok": not problems, **document}, lambda d: "\n".join(
            [f"found: {p}" for p in d["found"]] + [f"repaired: {r}" for r in d["repaired"]]
            + [f"problem: {p}" for p in d["problems"]] + ([] if d["problems"] else ["ok"])))
    else:
        problems = library.verify()
        ctx.emit({"ok": not problems, "problems": problems},
                 lambda d: "ok" if d["ok"] else "\n".join(f"problem: {p}" for p in d["problems"]))
    if problems:
        sys.exit(1)


@cli.command("settings")
@command
def settings_(ctx: Context) -> None:
    """Every setting: its value and where it came from (default, config file, environment, flag)."""
    rows = [{**r, "value": _shown(r["value"])} for r in ctx.settings.describe()]
    width = max(len(r["name"]) for r in rows)
    ctx.emit({"settings": rows}, lambda d: "\n".join(
        f"{r['name']:<{width}}  {r['value']!s:<28}  {r['source']}{' ' + r['from'] if r['from'] else ''}"
        for r in d["settings"]))


def _shown(value: object) -> object:
    """modality_weights back in the form it is written in (image=1,audio=1,text=1); other tables (the
    zero-shot templates) as JSON."""
    if not isinstance(value, dict):
        return value
    if all(isinstance(v, (int, float)) for v in value.values()):
        return ",".join(f"{k}={v:g}" for k, v in value.items())
    return json.dumps(value, ensure_ascii=False)


def _format_stats(document: dict) -> str:
    text = json.dumps(document, indent=2, default=str)
    return text if document["items"] or document["failed"] else f"{text}\n{EMPTY}"
