"""The layout's rules, read from the source: which part may import which, short modules, and the dead code
and second copies that issue 10 removed staying gone."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ("encoders", "indexer", "search", "web", "mmsearch")
# folder -> the mmsearch subpackages its modules must never import
FORBIDDEN = {
    "encoders": ("indexer", "search", "web"),  # models know no storage, files or HTTP
    "search": ("indexer", "web"),  # queries never walk folders; the engine knows no HTTP
    "indexer": ("web",),
}
MAX_LINES = 320  # "~300 lines is a lot": the longest module today is search/vector_index.py (319)


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    """Absolute names imported by a module, relative imports resolved inside its folder's subpackage."""
    folder = path.relative_to(ROOT).parts[0]
    package = ["mmsearch"] if folder == "mmsearch" else ["mmsearch", folder]
    package += list(path.relative_to(ROOT / folder).parent.parts)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            out |= {name} | {f"{name}.{alias.name}" for alias in node.names}
    return out


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_import_rules(folder):
    broken = {f"{p.relative_to(ROOT)} imports {name}" for p in _modules(folder) for name in _imports(p)
              for other in FORBIDDEN[folder]
              if name == f"mmsearch.{other}" or name.startswith(f"mmsearch.{other}.") or
              name == other or name.startswith(f"{other}.")}
    assert not broken, sorted(broken)


def test_the_engine_imports_only_the_mmsearch_namespace():
    """No module imports a repo folder by its bare name (it would not exist once installed)."""
    bare = {f"{p.relative_to(ROOT)}: {name}" for folder in ENGINE + ("tests", "benchmarks") for p in _modules(folder)
            for name in _imports(p) if name.split(".")[0] in ("encoders", "indexer", "search", "web", "manage")}
    assert not bare, sorted(bare)


def test_modules_are_short():
    long = {str(p.relative_to(ROOT)): n for folder in ENGINE for p in _modules(folder)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("where, name", [
    ("search/fusion.py", "def weighted_mean"), ("search/store.py", "def as_dict"), ("search/tables.py", "def as_dict"),
    ("search/vector_index.py", "problems: list"), ("search/query.py", "late_index"),
    ("mmsearch/library.py", 'kind == "item"'), ("web/__init__.py", "get_library"), ("web/__init__.py", '"jsonify"'),
    ("search/query.py", "def as_dict"), ("search/syntax.py", "mmsearch.indexer"),
])
def test_dead_code_stays_gone(where, name):
    assert name not in (ROOT / where).read_text()


def test_one_home_for_modality_facts():
    """Extensions and the modality names are spelt out only in mmsearch/modalities.py."""
    spelt = {str(p.relative_to(ROOT)) for folder in ENGINE for p in _modules(folder)
             if p.name != "modalities.py" and ('".jpeg"' in p.read_text() or
                                               '("image", "audio", "text")' in p.read_text())}
    assert not spelt, sorted(spelt)


def test_the_store_owns_the_sql():
    """Only the store's modules (search/store, tables, writes, filters, schema, lexical, health, bulk, tags,
    shared, migrations) build SQL."""
    allowed = {"store.py", "tables.py", "writes.py", "filters.py", "schema.py", "vector_index.py", "lexical.py",
               "health.py", "bulk.py", "tags.py", "shared.py"}
    users = {str(p.relative_to(ROOT)) for folder in ENGINE for p in _modules(folder)
             if "sqlalchemy" in {n.split(".")[0] for n in _imports(p)}
             and not (folder == "search" and p.name in allowed) and "migrations" not in p.parts}
    assert not users, sorted(users)
