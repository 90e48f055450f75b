"""`mmsearch serve` under hostile clients: a flood of half-open connections, request lines and headers
beyond the limits, bodies of too many form fields. Against a real waitress subprocess on 127.0.0.1."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HELD = 120  # half-open connections: more than waitress's default connection limit (100)
CHANNEL_TIMEOUT = 15  # s: long enough that the held sockets are still open when /api/health is asked


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection, read until the server closes it or the response is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: read what it said
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = _headers(head)
                if len(body) >= int(headers.get("content-length", "-1")) >= 0:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "no response"
    return int(head.split(b" ", 2)[1]), _headers(head), body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _get(port: int, path: str, timeout: float = 10.0):
    return _exchange(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(), timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    root = base / "media"
    root.mkdir()
    (root / "pines.txt").write_text("a note about pine trees in a forest")
    (root / "sea.txt").write_text("a note about a calm sea at sunset")
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(base / "data"), "MMSEARCH_MODEL": "tiny",
           "MMSEARCH_CHANNEL_TIMEOUT": str(CHANNEL_TIMEOUT)}
    subprocess.run([sys.executable, "-m", "mmsearch", "index", str(root)], env=env, check=True,
                   capture_output=True, timeout=300)
    port = _free_port()
    log = open(base / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            if _get(port, "/api/health", timeout=2)[0] == 200:
                break
        except (OSError, AssertionError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("serve did not start: " + Path(log.name).read_text()[-2000:])
            time.sleep(0.3)
    try:
        yield {"port": port, "log": Path(log.name)}
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _is_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data: not expected, but the socket is open
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_health_answers_while_120_half_open_connections_are_held(served):
    port = served["port"]
    held: list[socket.socket] = []
    try:
        for _ in range(HELD):  # each sends part of a request line, then nothing more
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /api/hea")
            held.append(sock)
        status, _, body = _get(port, "/api/health", timeout=10)
        assert status == 200 and json.loads(body) == {"status": "ok"}
        assert all(_is_open(sock) for sock in held), "the held connections were dropped before the answer"
        # ...and the server drops them once they have been idle for channel_timeout
        deadline = time.monotonic() + CHANNEL_TIMEOUT + 45
        for sock in held:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                rest = sock.recv(65536)
            except ConnectionResetError:
                rest = b""
            except socket.timeout:
                pytest.fail(f"a half-open connection is still open {CHANNEL_TIMEOUT + 45} s after it went idle")
            assert rest == b"", rest[:200]  # closed without an answer: there was no request to answer
    finally:
        for sock in held:
            sock.close()
    assert _get(port, "/api/health")[0] == 200


def _json_error(status: int, headers: dict, body: bytes) -> dict:
    assert headers["content-type"].startswith("application/json"), (status, headers, body[:300])
    return json.loads(body)["error"]


def test_a_300kb_query_string_gets_a_json_refusal(served):
    status, headers, body = _get(served["port"], "/api/search?q=" + "a" * 300_000)
    assert status in (414, 431)
    error = _json_error(status, headers, body)
    assert error["code"] in ("uri_too_long", "headers_too_large")
    assert "setting max_" in error["message"]


def test_a_long_request_line_gets_json_414_naming_the_limit(served):
    status, headers, body = _get(served["port"], "/api/search?q=" + "a" * 40_000)
    assert status == 414
    error = _json_error(status, headers, body)
    assert error["code"] == "uri_too_long" and "max_request_line" in error["message"]
    assert _get(served["port"], "/api/search?q=" + "a" * 1000)[0] == 200  # under the limit: served


def test_headers_beyond_the_limit_get_json_431_from_waitress(served):
    headers = "".join(f"X-Filler-{n}: {'x' * 1000}\r\n" for n in range(100))  # ~100 KB of headers
    raw = f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
    status, response_headers, body = _exchange(served["port"], raw)
    assert status == 431
    error = _json_error(status, response_headers, body)
    assert error["code"] == "headers_too_large" and "max_header_bytes" in error["message"]


def test_a_malformed_request_gets_a_json_400_from_waitress(served):
    status, headers, body = _exchange(served["port"], b"GET /api/health HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    assert status == 400
    assert _json_error(status, headers, body)["code"] == "bad_request"


def test_a_body_far_over_the_upload_limit_gets_a_json_413_from_waitress(served):
    raw = (b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: 1000000000000\r\n\r\n{")
    status, headers, body = _exchange(served["port"], raw)
    assert status == 413
    error = _json_error(status, headers, body)
    assert error["code"] == "payload_too_large" and "max_upload_bytes" in error["message"]


def _multipart(fields: int) -> tuple[bytes, str]:
    boundary = "mmsearchboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\npine\r\n' for _ in range(fields)]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("kind", ["multipart", "urlencoded"])
def test_too_many_form_fields_get_a_json_4xx_naming_the_field_limit(client, kind):
    for fields, refused in ((999, False), (1001, True)):
        if kind == "multipart":
            body, content_type = _multipart(fields)
        else:
            body, content_type = "&".join(["text=pine"] * fields).encode(), "application/x-www-form-urlencoded"
        response = client.post("/api/search", data=io.BytesIO(body), content_type=content_type)
        if not refused:
            assert response.status_code == 200, response.get_json()
            continue
        assert 400 <= response.status_code < 500
        error = response.get_json()["error"]
        assert error["code"] == "too_many_form_fields"
        assert "1000" in error["message"] and "max_form_fields" in error["message"]
        assert "body too large" not in error["message"]


def test_the_field_limit_is_a_setting(settings, tmp_path):
    from mmsearch.web import create_app
    app = create_app({"TESTING": True, "MMSEARCH": settings.replace(max_form_fields=10)})
    body, content_type = _multipart(11)
    response = app.test_client().post("/api/search", data=io.BytesIO(body), content_type=content_type)
    assert response.get_json()["error"]["code"] == "too_many_form_fields"
    assert "10 " in response.get_json()["error"]["message"]
