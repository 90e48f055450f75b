from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmsearch.settings import load_settings  # noqa: E402

from .media import make_collection  # noqa: E402


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path):
    return load_settings({"data_dir": str(data_dir), "model": "tiny", "batch_size": 4}, env={})


@pytest.fixture
def collection(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "media"
    return root, make_collection(root)


@pytest.fixture
def env(data_dir: Path) -> dict[str, str]:
    """The environment alone configures the CLI."""
    return {"MMSEARCH_DATA_DIR": str(data_dir), "MMSEARCH_MODEL": "tiny", "MMSEARCH_BATCH_SIZE": "4"}


@pytest.fixture
def runner(env: dict[str, str]):
    from manage import cli

    class Runner:
        def __call__(self, *args: str, extra_env: dict | None = None):
            return CliRunner().invoke(cli, list(args), env={**env, **(extra_env or {})}, catch_exceptions=False)
    return Runner()


@pytest.fixture
def app(settings):
    from web import create_app
    return create_app({"TESTING": True, "MMSEARCH": settings.as_dict()})


@pytest.fixture
def client(app):
    return app.test_client()
