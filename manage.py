#!/usr/bin/env python3
"""mmsearch command line: index a media folder, search it by words, pictures or items, keep it healthy."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

from mmsearch import __version__
from mmsearch.errors import MMSearchError
from mmsearch.settings import load_settings

MODALITY = click.Choice(["image", "audio", "text"])


def _common(command: Callable) -> Callable:
    """Options every command takes; unset flags fall back to env/config/defaults in mmsearch.settings."""
    options = [
        click.option("--data-dir", help="Data dir [env MMSEARCH_DATA_DIR]."),
        click.option("--db-url", help="SQLAlchemy database URL [env MMSEARCH_DB_URL]."),
        click.option("--model", help="open_clip model or 'tiny' [env MMSEARCH_MODEL]."),
        click.option("--pretrained", help="Pretrained tag, checkpoint file or 'random' [env MMSEARCH_PRETRAINED]."),
        click.option("--audio-checkpoint", help="Audio tower .safetensors file [env MMSEARCH_AUDIO_CHECKPOINT]."),
        click.option("--device", help="auto, cpu, cuda, cuda:N [env MMSEARCH_DEVICE]."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="TOML settings file [env MMSEARCH_CONFIG]."),
        click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


class _Context:
    def __init__(self, kwargs: dict[str, Any]):
        self.as_json = kwargs.pop("as_json")
        config_file = kwargs.pop("config_file")
        flags = {k: kwargs.pop(k) for k in ("data_dir", "db_url", "model", "pretrained", "audio_checkpoint",
                                            "device")}
        self.settings = load_settings(flags, config_file=config_file)
        self.kwargs = kwargs

    def library(self):
        from mmsearch.library import Library
        return Library(self.settings)

    def emit(self, document: dict, human: Callable[[dict], str]) -> None:
        click.echo(json.dumps(document, default=str) if self.as_json else human(document))


def _passive_openmp() -> None:
    """Before torch/faiss load: idle OpenMP workers sleep instead of spinning, so a query is not starved by
    threads spinning on the same cores (single queries ran 10-30x slower on a busy machine). Not for
    indexing, whose long model batches gain from spinning workers."""
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _command(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(_Context(kwargs), **kwargs)
    return _common(wrapper)


class _Group(click.Group):
    """One line on stderr and a non-zero exit for every error a user can fix."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MMSearchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except click.UsageError as exc:  # a bad option or value: click would add usage lines around it
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: everything committed so far is kept; run the command again to resume",
                       err=True)
            sys.exit(130)


@click.group("mmsearch", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, message="mmsearch %(version)s")
def cli() -> None:
    """Index photos, sounds and notes into one vector space and search across them."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--reembed", is_flag=True, help="Accept a model change: re-embed every item with the new model.")
@click.option("--reembed-audio", is_flag=True, help="Re-embed every sound with the current audio tower.")
@_command
def index(ctx: _Context, paths: tuple[str, ...], reembed: bool, reembed_audio: bool) -> None:
    """Index (or re-index incrementally) the media under PATHS."""
    library = ctx.library()
    report = library.run_index(paths, reembed=reembed, reembed_audio=reembed_audio,
                               progress=not ctx.as_json and sys.stderr.isatty())
    if not ctx.as_json:
        for path, reason in report.failures:
            click.echo(f"failed: {path}: {reason}", err=True)
        for error in report.scan_errors:
            click.echo(f"skipped: {error}", err=True)
    ctx.emit(report.summary(), lambda d: ", ".join(f"{k} {v}" for k, v in d.items() if k != "seconds")
             + f" in {d['seconds']:.1f}s")


@cli.command()
@click.argument("query", required=False)
@click.option("--image", "images", type=click.Path(dir_okay=False), multiple=True, help="Add an image file part.")
@click.option("--audio", "sounds", type=click.Path(dir_okay=False), multiple=True, help="Add a sound file part.")
@click.option("--like", "likes", type=int, multiple=True, help="Add an indexed item as a part: more like it.")
@click.option("-k", "--top-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many results (paging).")
@click.option("--modality", "modalities", type=MODALITY, multiple=True, help="Only these modalities (repeatable).")
@click.option("--fusion", type=click.Choice(["early", "rrf", "relative", "dbsf"]), default="early",
              show_default=True, help="early: one weighted vector; rrf / relative / dbsf: each part searched "
              "alone, lists fused by rank, by min-max scores or by mean ± 3σ scores.")
@click.option("--rrf-k", type=click.IntRange(1), default=60, show_default=True)
@click.option("--index", "index_name", type=click.Choice(["fused", "modality"]),
              help="Late fusion: search the fused index, or one index per modality "
                   "(default: modality when MMSEARCH_MODALITY_INDEXES is on).")
@click.option("--explain", is_flag=True, help="Show each part's score (and rank, for late fusion) per result.")
@click.option("--exclude-self", is_flag=True, help="Leave --like items and their exact duplicates out.")
@click.option("--dedupe", help="'hash' (exact duplicates) or a similarity threshold such as 0.95.")
@click.option("--path-prefix", help="Only items whose path starts with this.")
@click.option("--glob", "path_glob", help="Only items whose path matches this glob (* and ?).")
@click.option("--since", type=click.DateTime(), help="Only items dated on or after (see --date-field).")
@click.option("--until", type=click.DateTime(), help="Only items dated on or before.")
@click.option("--date-field", type=click.Choice(["mtime", "taken_at"]), default="mtime", show_default=True)
@click.option("--min-size", type=click.IntRange(0), help="Only files of at least this many bytes.")
@click.option("--max-size", type=click.IntRange(0), help="Only files of at most this many bytes.")
@click.option("--has-caption/--no-caption", default=None, help="Only items with (or without) a caption.")
@_command
def search(ctx: _Context, query: str | None, images: tuple[str, ...], sounds: tuple[str, ...],
           likes: tuple[int, ...], k: int, offset: int, modalities: tuple[str, ...], fusion: str, rrf_k: int,
           index_name: str | None, explain: bool, exclude_self: bool, dedupe: str | None, path_prefix: str | None,
           path_glob: str | None, since, until, date_field: str, min_size: int | None, max_size: int | None,
           has_caption: bool | None) -> None:
    """Search by QUERY (words, "phrases", 2:weights, + and - terms, like:ID, image/sound paths),
    --image FILE, --audio FILE or --like ID; several parts are fused."""
    _passive_openmp()
    from search.request import Filters, QueryPart, SearchRequest
    from search.syntax import parse_query
    parts = parse_query(query, allow_files=True) if query is not None else []
    parts += [QueryPart("image", _read_query_file("image", p), 1.0, p) for p in images]
    parts += [QueryPart("audio", _read_query_file("audio", p), 1.0, p) for p in sounds]
    parts += [QueryPart("item", i) for i in likes]
    if not parts:
        raise MMSearchError("give a query: TEXT, --image FILE, --audio FILE or --like ID")
    filters = Filters(modalities=list(modalities) or None, path_prefix=path_prefix, path_glob=path_glob,
                      date_from=since, date_to=until, date_field=date_field, min_size=min_size,
                      max_size=max_size, has_caption=has_caption)
    request = SearchRequest(parts, k=k, offset=offset, filters=filters, fusion=fusion, rrf_k=rrf_k,
                            explain=explain, exclude_self=exclude_self, dedupe=_dedupe(dedupe), index=index_name)
    library = ctx.library()
    for kind in {p.kind for p in parts} - {"item"}:
        library.query_encoder(kind)  # load models before the clock starts
    response = library.search(request)
    document = {"results": [h.as_dict() for h in response.results], "took_ms": round(response.took_ms, 2),
                "fusion": fusion, "index": response.index}
    if response.next_offset is not None:
        document["next"] = response.next_offset
    ctx.emit(document, _format_hits)


def _dedupe(value: str | None) -> str | float | None:
    if value is None or value == "hash":
        return value
    try:
        return float(value)
    except ValueError:
        raise MMSearchError(f"--dedupe takes 'hash' or a number, not {value!r}") from None


def _read_query_file(kind: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise MMSearchError(f"cannot read query {kind} {path}: {exc.strerror or exc}") from None


def _format_hits(document: dict) -> str:
    if not document["results"]:
        return "no results"
    lines = []
    for r in document["results"]:
        lines.append(f"{r['score']:.4f}  {r['id']:>6}  {r['modality']:<5}  {r['path']}")
        for part in r.get("parts") or ():
            rank = f"  rank {part['rank']}" if part.get("rank") else ""
            score = "-" if part["score"] is None else f"{part['score']:.4f}"
            lines.append(f"        {part['label']} ×{part['weight']:g}: {score}{rank}")
    return "\n".join(lines)


@cli.command("train-audio")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", "train_batch", type=click.IntRange(2), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 0.9, min_open=True), default=0.2, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=5, show_default=True,
              help="Stop after this many epochs without a better validation recall.")
@click.option("--time-limit", type=click.FloatRange(0, min_open=True), help="Stop after this many seconds.")
@click.option("--output", type=click.Path(dir_okay=False), help="Checkpoint file (default: in the data dir).")
@click.option("--fresh", is_flag=True, help="Ignore a previous interrupted run instead of resuming it "
              "(training still starts from the data dir's current tower, teaching it more sounds).")
@_command
def train_audio(ctx: _Context, manifest: str, epochs: int, train_batch: int, lr: float, val_fraction: float,
                patience: int, time_limit: float | None, output: str | None, fresh: bool) -> None:
    """Teach the audio tower sounds from a CSV of audio,caption[,image] pairs; it becomes the data dir's tower."""
    from encoders.audio_training import TrainOptions
    library = ctx.library()
    options = TrainOptions(epochs=epochs, batch_size=train_batch, lr=lr, val_fraction=val_fraction,
                           patience=patience, time_limit=time_limit, resume=not fresh,
                           max_seconds=min(30.0, library.settings.max_audio_seconds))
    report = library.train_audio(manifest, options, output, log=lambda line: click.echo(line, err=True))
    document = {"checkpoint": report.checkpoint, "best_epoch": report.best_epoch, "val_r1": report.best_r1,
                "val_r5": report.best_r5, "train_pairs": report.train_pairs, "val_pairs": report.val_pairs,
                "epochs": len(report.epochs), "stopped": report.stopped}
    ctx.emit(document, lambda d: f"saved {d['checkpoint']} (epoch {d['best_epoch']}: val audio→text R@1 "
             f"{d['val_r1']:.3f}, R@5 {d['val_r5']:.3f}); run 'index' to re-embed sounds with it")


@cli.command("fit-clap-bridge")
@click.argument("clap_checkpoint", type=click.Path(dir_okay=False))
@click.argument("captions", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["procrustes", "lstsq"]), default="procrustes", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Bridge file (default: in the data dir).")
@_command
def fit_clap_bridge(ctx: _Context, clap_checkpoint: str, captions: str, method: str, output: str | None) -> None:
    """Use a LAION-CLAP checkpoint as the audio tower, mapped into this data dir's space by a linear map
    fitted on CAPTIONS (a text file, one caption per line). Needs: pip install 'mmsearch[clap]'."""
    document = ctx.library().fit_clap_bridge(clap_checkpoint, captions, method, output)
    ctx.emit(document, lambda d: f"saved {d['bridge']}: {d['captions']} captions, held-out text R@1 "
             f"{d['heldout_text_r1']:.3f}; run 'index' to re-embed sounds through CLAP")


@cli.command()
@_command
def stats(ctx: _Context) -> None:
    """Counts per modality, pending and failed items, model and vector index."""
    ctx.emit(ctx.library().stats(), lambda d: json.dumps(d, indent=2, default=str))


@cli.command()
@click.option("-n", "--limit", type=click.IntRange(1), default=100, show_default=True)
@_command
def failed(ctx: _Context, limit: int) -> None:
    """List files that could not be indexed, with the reason."""
    rows = ctx.library().store.failures(limit)
    ctx.emit({"failed": rows}, lambda d: "\n".join(f"{r['path']}: {r['error']}" for r in d["failed"])
             or "no failed files")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@_command
def remove(ctx: _Context, paths: tuple[str, ...]) -> None:
    """Remove the items at PATHS (files, or everything under folders) from the index. Files are not touched."""
    removed = ctx.library().remove(paths)
    if removed == 0:
        raise MMSearchError(f"nothing indexed at {', '.join(paths)}")
    ctx.emit({"removed": removed}, lambda d: f"removed {d['removed']} item(s)")


@cli.command("rebuild-index")
@_command
def rebuild_index(ctx: _Context) -> None:
    """Rebuild the vector index file from the vectors stored in SQL."""
    library = ctx.library()
    with library.write_lock():
        report = library.rebuild_index()
    ctx.emit({"rebuilt": True, "ntotal": report.added}, lambda d: f"rebuilt vector index: {d['ntotal']} vectors")


@cli.command()
@_command
def verify(ctx: _Context) -> None:
    """Check that the vector index file agrees with SQL; exit 1 when not."""
    problems = ctx.library().verify()
    ctx.emit({"ok": not problems, "problems": problems},
             lambda d: "ok" if d["ok"] else "\n".join(f"problem: {p}" for p in d["problems"]))
    if problems:
        sys.exit(1)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True, help="Request threads.")
@_command
def serve(ctx: _Context, host: str, port: int, threads: int) -> None:
    """Serve the search page and the JSON API (waitress) over the data dir that 'index' built."""
    _passive_openmp()
    import waitress
    from web import create_app
    app = create_app({"MMSEARCH": ctx.settings})
    app.extensions["mmsearch"].load_models()  # the encoders are loaded once per process, before serving
    click.echo(f"serving http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    # waitress buffers a whole body before Flask sees it, so it refuses absurd ones (a 1 GB upload) itself,
    # from the Content-Length alone; bodies up to twice the limit reach Flask, which answers 413 in JSON
    waitress.serve(app, host=host, port=port, threads=threads, ident="mmsearch",
                   max_request_body_size=2 * ctx.settings.max_upload_bytes + 1024 * 1024)


def main() -> None:
    cli(prog_name="mmsearch")


if __name__ == "__main__":
    main()
