"""The serve command: the page and the JSON API under waitress, set up to keep answering slow or hostile clients.

waitress reads every request in its event loop and hands only complete ones to the request threads, so a
connection that never finishes its request line holds no thread, only a slot of ``connection_limit``
(waitress's default, 100, is what ~100 half-open sockets used up: the server then stopped accepting) until
it has been idle for ``channel_timeout`` (waitress's default 120 s). What waitress still answers itself
(request line + headers over ``max_header_bytes``, a malformed request, a body far over the upload limit)
comes back as the API's JSON error instead of waitress's text/plain page.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import click

from .app import Context, cli, command, passive_openmp

FD_RESERVE = 256  # file descriptors kept for the database, the index files, models and temp files

log = logging.getLogger(__name__)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True, help="Request threads.")
@command
def serve(ctx: Context, host: str, port: int, threads: int) -> None:
    """Serve the search page and the JSON API (waitress) over the data dir that 'index' built."""
    passive_openmp()
    import waitress
    from mmsearch.web import create_app
    app = create_app({"MMSEARCH": ctx.settings})
    app.extensions["mmsearch"].load_models()  # the encoders are loaded once per process, before serving
    logging.basicConfig()
    server = waitress.create_server(app, host=host, port=port, threads=threads, ident="mmsearch",
                                    **waitress_limits(ctx.settings))
    json_refusals(server, ctx.settings)
    click.echo(f"serving http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    server.run()


def waitress_limits(settings) -> dict[str, Any]:
    timeout = settings.channel_timeout
    return {
        "connection_limit": _room_for(settings.connection_limit),
        "channel_timeout": timeout,
        "cleanup_interval": max(1, min(30, timeout // 3)),  # how often idle connections are looked for
        "max_request_header_size": settings.max_header_bytes,  # request line + headers, held in memory
        # waitress buffers a whole body (in memory up to inbuf_overflow, 512 KiB, then in a temp file) before
        # Flask sees it, so it refuses absurd ones (a 1 GB upload) itself, from the Content-Length alone;
        # bodies up to twice the limit reach Flask, which answers 413 naming max_upload_bytes
        "max_request_body_size": 2 * settings.max_upload_bytes + 1024 * 1024,
    }


def _room_for(connections: int) -> int:
    """Raise the soft open-file limit so that ``connections`` sockets fit beside the server's own files, or
    lower the connection limit to what fits (an accept() failing with EMFILE would stall the loop)."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = connections + FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < want:
            soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ImportError, OSError, ValueError):
        return connections
    if soft != resource.RLIM_INFINITY and soft - FD_RESERVE < connections:
        log.warning("connection_limit %d lowered to %d: the open-file limit is %d", connections,
                    max(1, soft - FD_RESERVE), soft)
        return max(1, soft - FD_RESERVE)
    return connections


def json_refusals(server, settings) -> None:
    """Give the server's channels an error task that answers in the API's ``{"error": {"code", "message"}}``
    (waitress's own ErrorTask writes text/plain). ``error_task_class`` is waitress's hook for this."""
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer
    from waitress.task import ErrorTask

    from mmsearch.web import HTTP_CODES, OTHER_CSP, SECURITY_HEADERS

    messages = {
        431: f"request line and headers exceed {settings.max_header_bytes} bytes (setting max_header_bytes)",
        413: f"request body too large: the limit is {settings.max_upload_bytes} bytes (setting max_upload_bytes)",
        500: "internal error",
    }

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            code = HTTP_CODES.get(error.code) or ("internal" if error.code >= 500 else "http_error")
            message = messages.get(error.code) or f"{error.reason.lower()}: {error.body}"[:300]
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                          ("Content-Security-Policy", OTHER_CSP),
                                          *SECURITY_HEADERS.items()])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    sockets = getattr(server, "map", None) or server._map  # several addresses (MultiSocketServer) or one
    for dispatcher in list(sockets.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = JsonChannel
