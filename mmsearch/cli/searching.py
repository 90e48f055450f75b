"""The search command: words, files and items as parts of one query, fused, filtered and explained."""
from __future__ import annotations

import os


import click

from mmsearch.errors import MMSearchError

from mmsearch.search.request import FUSIONS, INDEXES, MAX_K

from .app import EMPTY, MODALITY, Context, cli, command, passive_openmp


@cli.command()
@click.argument("query", required=False)
@click.option("--image", "images", type=click.Path(dir_okay=False), multiple=True, help="Add an image file part.")
@click.option("--audio", "sounds", type=click.Path(dir_okay=False), multiple=True, help="Add a sound file part.")
@click.option("--like", "likes", type=int, multiple=True, help="Add an indexed item as a part: more like it.")
@click.option("-k", "--top-k", "k", type=click.IntRange(1, MAX_K), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many results (paging).")
@click.option("--modality", "modalities", type=MODALITY, multiple=True, help="Only these modalities (repeatable).")
@click.option("--fusion", type=click.Choice(FUSIONS), default="early", show_default=True,
              help="early: one weighted vector; rrf / relative / dbsf: each part searched "
              "alone, lists fused by rank, by min-max scores or by mean ± 3σ scores.")
@click.option("--rrf-k", type=click.IntRange(1), default=60, show_default=True)
@click.option("--index", "index_name", type=click.Choice(INDEXES),
              help="Late fusion: rank within each modality's part of the index (modality, the default) "
                   "or over the whole index at once (fused).")
@click.option("--explain", is_flag=True, help="Show each part's score (and rank, for late fusion) per result.")
@click.option("--exclude-self", is_flag=True, help="Leave --like items and their exact duplicates out.")
@click.option("--hybrid", is_flag=True, help="Also rank the words by full-text search (file names, paths, "
              "captions, note text; BM25) and fuse that list in (RRF).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="With --hybrid: the vector ranking's weight; 1 − alpha is the lexical one's.")
@click.option("--dedupe", help="'hash' (exact duplicates) or a similarity threshold such as 0.95.")
@click.option("--path-prefix", help="Only items whose path starts with this.")
@click.option("--glob", "path_glob", help="Only items whose path matches this glob (* and ?).")
@click.option("--since", help="Only items dated on or after this ISO date (see --date-field).")
@click.option("--until", help="Only items dated on or before this ISO date.")
@click.option("--date-field", type=click.Choice(["mtime", "taken_at"]), default="mtime", show_default=True)
@click.option("--min-size", type=click.IntRange(0), help="Only files of at least this many bytes.")
@click.option("--max-size", type=click.IntRange(0), help="Only files of at most this many bytes.")
@click.option("--has-caption/--no-caption", default=None, help="Only items with (or without) a caption.")
@click.option("--tag", "tags", multiple=True, help="Only items tagged with this label (repeatable: all of them).")
@click.option("--tag-set", help="Only the tags of this tag set count (alone: items with any tag of it); a name "
              "that is no set's is an error naming the sets.")
@command
def search(ctx: Context, query: str | None, images: tuple[str, ...], sounds: tuple[str, ...],
           likes: tuple[int, ...], k: int, offset: int, modalities: tuple[str, ...], fusion: str, rrf_k: int,
           index_name: str | None, explain: bool, exclude_self: bool, hybrid: bool, alpha: float, dedupe: str | None, path_prefix: str | None,
           path_glob: str | None, since: str | None, until: str | None, date_field: str, min_size: int | None,
           max_size: int | None, has_caption: bool | None, tags: tuple[str, ...], tag_set: str | None) -> None:
    """Search by QUERY (words, "phrases", 2:weights, + and - terms, like:ID, image/sound paths),
    --image FILE, --audio FILE or --like ID; several parts are fused."""
    passive_openmp()
    from mmsearch.search.parse import build
    from mmsearch.search.results import response_document
    from mmsearch.search.request import Limits, QueryPart
    files = [QueryPart("image", _read_query_file("image", p), 1.0, p) for p in images]
    files += [QueryPart("audio", _read_query_file("audio", p), 1.0, p) for p in sounds]
    files += [QueryPart("item", i) for i in likes]
    if query is None and not files:
        raise MMSearchError("give a query: TEXT, --image FILE, --audio FILE or --like ID")
    options = {"text": query, "k": k, "offset": offset, "modality": list(modalities),
               "fusion": fusion, "rrf_k": rrf_k, "index": index_name, "explain": explain,
               "exclude_self": exclude_self, "hybrid": hybrid, "alpha": alpha, "dedupe": dedupe, "path_prefix": absolute_prefix(path_prefix), "path_glob": path_glob,
               "date_from": since, "date_to": until, "date_field": date_field, "min_size": min_size,
               "max_size": max_size, "has_caption": has_caption, "tags": list(tags) or None, "tag_set": tag_set}
    request = build({key: value for key, value in options.items() if value is not None}, files, allow_files=True,
                    limits=Limits.of(ctx.settings))
    library = ctx.library(existing=True)
    if not library.store.counts()["items"]:
        raise MMSearchError(EMPTY)
    for kind in {p.kind for p in request.parts} - {"item"}:
        library.query_encoder(kind)  # load models before the clock starts
    response = library.search(request)
    tagged = library.store.tags.of([hit.id for hit in response.results])
    ctx.emit(response_document(response, request, tags=tagged), _format_hits)


def absolute_prefix(prefix: str | None) -> str | None:
    """Paths are stored absolute: a relative prefix means one under the current folder (its trailing / kept,
    so 'photos/' never matches photos-old)."""
    if not prefix or os.path.isabs(os.path.expanduser(prefix)):
        return os.path.expanduser(prefix) if prefix else prefix
    return os.path.abspath(prefix) + (os.sep if prefix.endswith(os.sep) else "")


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
        if r.get("match"):
            lines.append(f"        matched: {_describe(r['match'])}")
        if r.get("tags"):
            lines.append("        tags: " + ", ".join(f"{t['label']} ({t['set']} {t['score']:.2f})" for t in r["tags"]))
        for part in r.get("parts") or ():
            rank = f"  rank {part['rank']}" if part.get("rank") else ""
            score = "-" if part["score"] is None else f"{part['score']:.4f}"
            lexical = part.get("lexical") or {}
            words = f"  words rank {lexical['rank']} ({lexical['score']:.4f})" if lexical.get("rank") else ""
            lines.append(f"        {part['label']} ×{part['weight']:g}: {score}{rank}{words}")
    return "\n".join(lines)


def _describe(match: dict) -> str:
    """One line for a result's match: its kind and score, and the passage's or caption's text (cut) or the
    segment's time."""
    kind = "words" if match["kind"] == "lexical" else match["kind"]
    where = ""
    if "start" in match:
        where = f" at {_clock(match['start'])}–{_clock(match.get('end', match['start']))}"
    elif match.get("text"):
        text = " ".join(match["text"].split())
        where = f" «{text[:100]}{'…' if len(text) > 100 else ''}»"
    return f"{kind} {match['score']:.4f}{where}"


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"
