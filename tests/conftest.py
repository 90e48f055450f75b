from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmsearch.settings import load_settings  # noqa: E402

from .media import make_collection  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--faults", type=int, default=None,
                     help="kills in tests/test_fault_injection.py (default: env MMSEARCH_FAULTS, else 5)")


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
    from mmsearch.cli import cli

    class Runner:
        def __call__(self, *args: str, extra_env: dict | None = None):
            return CliRunner().invoke(cli, list(args), env={**env, **(extra_env or {})}, catch_exceptions=False)
    return Runner()


@pytest.fixture
def app(settings):
    from mmsearch.web import create_app
    return create_app({"TESTING": True, "MMSEARCH": settings.as_dict()})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server for the whole run (tests/postgres.py). Its folder is outside
    pytest's (root-only) temporary tree, so the postgres user can reach it."""
    import shutil
    import tempfile
    from .postgres import Server
    root = Path(tempfile.mkdtemp(prefix="mmsearch-pg-"))
    server = Server(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh empty database of each kind the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


BACKENDS = ("sqlite+faiss", "postgresql+faiss", "sqlite+milvus-lite")


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> dict[str, str]:
    """The settings of each SQL store and vector store the engine runs on, for the suites that must hold on
    all of them: SQLite or PostgreSQL (the throwaway server) with FAISS files, and SQLite with milvus-lite
    (its file beside the test's data dir)."""
    if request.param == "postgresql+faiss":
        return {"db_url": request.getfixturevalue("postgres").new_database()}
    if request.param == "sqlite+milvus-lite":
        return {"vector_store": f"milvus:{tmp_path / 'vectors.db'}"}
    return {}


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory) -> tuple[Path, dict]:
    """`tiny` trained on generated coloured shapes (tests/shapes.py), once per run for every test that needs
    a model that knows something: (checkpoint, figures of the run)."""
    from .shapes import train_tiny
    checkpoint = tmp_path_factory.mktemp("model") / "tiny-shapes.pt"
    figures = train_tiny(checkpoint, steps=600, seed=0, log=print)
    print("trained:", figures)
    return checkpoint, figures
