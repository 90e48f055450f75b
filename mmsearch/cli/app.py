"""The command group, its global options and the one place CLI errors are reported."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

from mmsearch import __version__
from mmsearch.errors import MMSearchError
from mmsearch.modalities import MODALITIES
from mmsearch.settings import SETTINGS, load_settings

MODALITY = click.Choice(MODALITIES)
EMPTY = "nothing indexed yet: run 'mmsearch index PATH'"


def common(command: Callable) -> Callable:
    """Options every command takes: the settings marked ``flag`` in the table (help from the table), the
    config file and --json. Unset flags fall back to env/config/defaults in mmsearch.settings."""
    options = [click.option(f"--{s.name.replace('_', '-')}", s.name, default=None, help=f"{s.help} [env {s.env}]")
               for s in SETTINGS if s.flag]
    options += [
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="TOML settings file [env MMSEARCH_CONFIG]."),
        click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_remember_json,
                     help="Print exactly one JSON document (errors too)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """Eager, so it is known before any other option can fail: errors are JSON too."""
    ctx.meta["mmsearch.json"] = ctx.meta.get("mmsearch.json") or value
    return value


class Context:
    def __init__(self, kwargs: dict[str, Any]):
        self.as_json = kwargs.pop("as_json")
        config_file = kwargs.pop("config_file")
        flags = {s.name: kwargs.pop(s.name) for s in SETTINGS if s.flag}
        self.settings = load_settings(flags, config_file=config_file)
        self.kwargs = kwargs

    def library(self, existing: bool = False):
        """The data dir's Library; ``existing`` for commands that only read: a missing one is an error."""
        from mmsearch.library import Library
        return Library(self.settings, existing=existing)

    def emit(self, document: dict, human: Callable[[dict], str]) -> None:
        click.echo(json.dumps(document, default=str) if self.as_json else human(document))


def passive_openmp() -> None:
    """Before torch/faiss load: idle OpenMP workers sleep instead of spinning, so a query is not starved by
    threads spinning on the same cores (single queries ran 10-30x slower on a busy machine). Not for
    indexing, whose long model batches gain from spinning workers."""
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def command(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(Context(kwargs), **kwargs)
    return common(wrapper)


class _Group(click.Group):
    """Every error a user can fix: one line on stderr, or with --json one document on stdout
    (``{"error": {"code", "message"}}``); exit 1 for errors, 2 for a bad command line, 130 for Ctrl-C."""

    def invoke(self, ctx: click.Context) -> Any:
        # the raw arguments, before parsing, so a bad option still knows about --json (click < 8.2 keeps the
        # command's own arguments in ctx.args alone)
        raw = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        try:
            return super().invoke(ctx)
        except MMSearchError as exc:
            _fail(ctx, raw, getattr(exc, "code", "error"), str(exc), 1)
        except click.UsageError as exc:  # a bad option or value: click would add usage lines around it
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
            _fail(ctx, raw, "usage", f"{exc.format_message()}{hint}", 2)
        except KeyboardInterrupt:
            _fail(ctx, raw, "interrupted", "interrupted: everything committed so far is kept; run the command "
                  "again to resume", 130)


def _fail(ctx: click.Context, raw: list[str], code: str, message: str, status: int) -> None:
    as_json = ctx.meta.get("mmsearch.json") or "--json" in raw
    if as_json:
        click.echo(json.dumps({"error": {"code": code, "message": message}}))
    if code == "interrupted":  # a person pressed Ctrl-C and reads the terminal, whatever the output format
        click.echo(message, err=True)
    elif not as_json:
        click.echo(f"error: {message}", err=True)
    sys.exit(status)


@click.group("mmsearch", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, message="mmsearch %(version)s")
def cli() -> None:
    """Index photos, sounds and notes into one vector space and search across them."""
