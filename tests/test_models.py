"""Weights ahead of time (models fetch) and a missing download that fails at once with the way out.

The hub is either a local stand-in (HEAD and GET of one file) or a closed local port; HF_ENDPOINT is read
when huggingface_hub is imported, so the cases that point it elsewhere run in a subprocess.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # ViT-B-32's default tag, laion2b_s34b_b79k
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
WEIGHTS = b"not really weights, but the hub does not care" * 100


class _Hub(http.server.BaseHTTPRequestHandler):
    """Just enough of the hub's resolve endpoint for hf_hub_download: ETag, commit, length, body."""
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def _answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        data = self.files.get(self.path.split("?")[0])
        self.send_response(200 if data is not None else 404)
        if data is not None:
            self.send_header("ETag", '"weights-1"')
            self.send_header("X-Repo-Commit", "c" * 40)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hub():
    _Hub.files = {f"/{REPO}/resolve/main/open_clip_model.safetensors": WEIGHTS}
    _Hub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Hub.requests
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    """An address nothing listens on: connections are refused at once, as with no network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def mmsearch(tmp_path: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MMSEARCH_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), MMSEARCH_CACHE_DIR=str(tmp_path / "cache"),
               MMSEARCH_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "mmsearch", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def test_fetch_says_tiny_needs_no_download(runner):
    result = runner("models", "fetch")
    assert result.exit_code == 0 and "nothing to download" in result.stdout
    document = json.loads(runner("models", "fetch", "--json").stdout)
    assert document == {"model": "tiny", "pretrained": "random", "path": None, "downloaded": False}


def test_fetch_reports_a_local_checkpoint_file(runner, tmp_path):
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"weights from elsewhere")
    result = runner("models", "fetch", "--model", "ViT-B-32", "--pretrained", str(checkpoint))
    assert result.exit_code == 0 and f"local file {checkpoint}: nothing to download" in result.stdout
    document = json.loads(runner("models", "fetch", "--model", "ViT-B-32", "--pretrained", str(checkpoint),
                                 "--json").stdout)
    assert document == {"model": "ViT-B-32", "pretrained": str(checkpoint), "path": str(checkpoint),
                        "downloaded": False}


def test_fetch_downloads_into_the_cache_then_needs_no_network(hub, tmp_path):
    endpoint, requests = hub
    first = mmsearch(tmp_path, endpoint, "models", "fetch", "--model", "ViT-B-32", "--json")
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    assert document["downloaded"] is True and document["pretrained"] == "laion2b_s34b_b79k"
    assert Path(document["path"]).read_bytes() == WEIGHTS
    assert Path(document["path"]).is_relative_to(tmp_path / "cache")
    assert any(r.startswith("GET ") and r.endswith("open_clip_model.safetensors") for r in requests)

    seen = len(requests)
    again = mmsearch(tmp_path, endpoint, "models", "fetch", "--model", "ViT-B-32")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"ViT-B-32/laion2b_s34b_b79k already in the cache at {document['path']}"
    assert requests[seen:] == []  # cached weights: not even the reachability check


@pytest.mark.parametrize("command", [["models", "fetch", "--model", "ViT-B-32"],
                                     ["index", str(SAMPLES), "--model", "ViT-B-32"]])
def test_unreachable_hub_is_one_line_with_the_way_out(tmp_path, command):
    result = mmsearch(tmp_path, closed_port_url(), *command)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in ("cannot fetch weights 'laion2b_s34b_b79k'", "unreachable", "Connection refused",
                     "mmsearch models fetch --model ViT-B-32", "HF_HUB_OFFLINE=1", "--pretrained FILE"):
        assert fragment in lines[0]


def test_unreachable_hub_with_json_is_one_error_document(tmp_path):
    result = mmsearch(tmp_path, closed_port_url(), "models", "fetch", "--model", "ViT-B-32", "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)  # one document: a second one would not parse
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message"}
    assert "--pretrained FILE" in document["error"]["message"]


def _fake_cache(cache_dir: Path) -> Path:
    """A file laid out as the hub's cache keeps it: refs/main names a snapshot holding the file."""
    repo = cache_dir / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("c" * 40)
    path = repo / "snapshots" / ("c" * 40) / "open_clip_model.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(WEIGHTS)
    return path


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if the hub's download (and its retry loop) is entered; records reachability checks."""
    import huggingface_hub
    import open_clip
    probes: list[tuple[str, float]] = []
    session = huggingface_hub.get_session()

    class Recording:
        def head(self, url: str, timeout: float):
            probes.append((url, timeout))
            return session.head(url, timeout=timeout)

    def download(*args, **kwargs):
        raise AssertionError("the hub's download was entered")
    monkeypatch.setattr(huggingface_hub, "get_session", Recording)
    monkeypatch.setattr(open_clip, "download_pretrained", download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    return probes


def test_unreachable_hub_is_checked_once_with_a_short_timeout(no_download, monkeypatch, tmp_path):
    from huggingface_hub import constants
    from mmsearch.encoders.loading import resolve_spec
    from mmsearch.encoders.weights import PROBE_TIMEOUT_S, weights_file
    from mmsearch.errors import ModelLoadError
    endpoint = closed_port_url()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    with pytest.raises(ModelLoadError, match=f"{endpoint} unreachable") as caught:
        weights_file(resolve_spec("ViT-B-32"), str(tmp_path / "cache"))
    assert no_download == [(endpoint, PROBE_TIMEOUT_S)] and PROBE_TIMEOUT_S <= 5
    assert "\n" not in str(caught.value)

    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "7")  # the hub's own knob, when set, is the user's choice
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 7)
    with pytest.raises(ModelLoadError):
        weights_file(resolve_spec("ViT-B-32"), str(tmp_path / "cache"))
    assert no_download[-1] == (endpoint, 7)


def test_offline_mode_reads_the_cache_alone(no_download, monkeypatch, tmp_path):
    from mmsearch.encoders.loading import resolve_spec
    from mmsearch.encoders.weights import weights_file
    from mmsearch.errors import ModelLoadError
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after the hub's import, as the CLI's env is
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set and they are not in the hub cache"):
        weights_file(resolve_spec("ViT-B-32"), str(tmp_path / "cache"))
    assert no_download == []


@pytest.mark.parametrize("offline", ["1", ""])
def test_cached_weights_are_used_without_the_network(no_download, monkeypatch, tmp_path, offline):
    from mmsearch.encoders.loading import _weights_file, resolve_spec
    cached = _fake_cache(tmp_path / "cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    assert _weights_file(resolve_spec("ViT-B-32"), str(tmp_path / "cache")) == str(cached)
    assert no_download == []
