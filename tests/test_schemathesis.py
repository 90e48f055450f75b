"""Issue 11, "the OpenAPI spec is the truth": schemathesis (from PyPI) drives the app in-process (WSGI) over a
small indexed library, with cases generated from /api/openapi.json (examples, boundary-value coverage and
random fuzzing, valid and invalid data), and fails on any 5xx, any response that does not match the spec
(status code, content type, headers, body schema), any valid request refused and any invalid one accepted.

Bounded and derandomized: a fixed seed, MAX_EXAMPLES random cases per operation (MMSEARCH_SCHEMATHESIS_EXAMPLES
raises it for a longer run by hand). Uploads and deletions run without an admin token, so every one is refused
(403) and the library never changes under the run.

What the schemas alone cannot say, the spec says in words and this module supplies: a query text is in the
query syntax (format "mmsearch-query": QUERY below draws such texts), an image or a sound is a decodable file
(valid cases carry a real PNG or WAV), and the rules across fields (openapi_schemas.RULES) hold in the valid
cases (``follows_the_rules``); invalid cases are left as generated.
"""
from __future__ import annotations

import base64
import io
import json
import os

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks

from mmsearch.library import Library
from mmsearch.search.request import MAX_ID
from mmsearch.settings import load_settings
from mmsearch.web import create_app
from mmsearch.web.openapi import document
from mmsearch.web.openapi_schemas import QUERY_FORMAT

from .media import make_collection, picture, tone_wav

SEED = 20240511
MAX_EXAMPLES = int(os.environ.get("MMSEARCH_SCHEMATHESIS_EXAMPLES", "20"))
CHECKS = [not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance,
          checks.positive_data_acceptance, checks.negative_data_rejection]
LATE = ("rrf", "relative", "dbsf")

# the query syntax, positive terms only (late fusion needs one): words, "quoted phrases", N:term, like:ID
_WORD = st.text(st.characters(categories=("L", "N"), max_codepoint=0x2FFF), min_size=1, max_size=8)
_TERM = st.one_of(_WORD, _WORD.map(lambda w: f'"{w} {w}"'),
                  st.integers(1, MAX_ID).map(lambda i: f"like:{i}"))
# terms of different weights never run together, so a query of n terms is n parts
QUERY = st.lists(_TERM, min_size=1, max_size=3).map(
    lambda terms: " + ".join(weight + term for weight, term in zip(["", "2:", "0.5:"], terms)))
schemathesis.openapi.format(QUERY_FORMAT, QUERY)


def _png() -> bytes:
    buffer = io.BytesIO()
    picture(3, (32, 24)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("schemathesis")
    make_collection(base / "media")
    tone_wav(base / "tone.wav")
    settings = load_settings({"data_dir": str(base / "data"), "model": "tiny", "batch_size": 8}, env={})
    Library(settings).run_index([base / "media"])
    app = create_app({"TESTING": True, "MMSEARCH": settings})
    return {"app": app, "settings": settings, "wav": (base / "tone.wav").read_bytes(), "png": _png()}


def follows_the_rules(options: dict, settings) -> bool:
    """openapi_schemas.RULES and the explain limit, for a valid case's options (each QUERY term is one part);
    a vector part's length is checked against the served data dir's dimension (looked up once)."""
    if not isinstance(options, dict):
        return True
    text = options.get("text", options.get("q"))
    parts = options.get("parts") or []
    count = (len(text.split(" + ")) if text else 0) + ("like" in options) + len(parts) + (
        "image" in options) + ("audio" in options)
    weights = options.get("weights")
    signs = weights if weights is not None else [1] * (count - len(parts)) + [p.get("weight", 1) for p in parts]
    fusion = options.get("fusion", "early")
    explain = options.get("explain") is True
    terms = text.split(" + ") if text else []  # the query's own parts come first, then like, parts, files
    words = any((weights[n] if weights is not None and n < len(weights) else 1) > 0 and not term.startswith("-")
                and not term.lstrip("0123456789.:").startswith("like:")  # an item part has no words to look up
                for n, term in enumerate(terms))
    words = words or any(p.get("kind") == "text" and (weights[count - len(parts) + n] if weights is not None and
                                                      len(weights) == count else p.get("weight", 1)) > 0
                         for n, p in enumerate(parts) if isinstance(p, dict))
    if options.get("hybrid") in (True, "true") and not words:
        return False
    vectors = [p["value"] for p in parts if isinstance(p, dict) and p.get("kind") == "vector"]
    if vectors:  # a vector part has the data dir's dimension (a rule the spec states in words)
        dims = follows_the_rules.__dict__.setdefault("dims", {})
        if settings.data_path not in dims:
            dims[settings.data_path] = Library(settings, existing=True).vector_dims()[0]
        if any(len(v) != dims[settings.data_path] for v in vectors):
            return False
    return (count > 0 and not (fusion == "early" and options.get("index") == "modality")
            and (fusion == "early" or any(w > 0 for w in signs))
            and (weights is None or len(weights) == count)
            and not (explain and options.get("k", 10) * count > settings.explain_max_rows))


def test_the_served_spec_is_the_document_with_the_app_settings(served):
    client = served["app"].test_client()
    served_spec = client.get("/api/openapi.json").get_json()
    dims = Library(served["settings"]).vector_dims()[0]  # a vector part has the data dir's dimension
    assert served_spec == json.loads(json.dumps(document(served_spec["servers"][0]["url"], served["settings"], dims)))
    vector = next(branch for branch in served_spec["components"]["schemas"]["Part"]["oneOf"]
                  if branch["properties"]["kind"].get("const") == "vector")["properties"]["value"]
    assert vector["minItems"] == vector["maxItems"] == dims
    tight = served["settings"].replace(query_max_chars=77, query_max_parts=5, explain_max_rows=9)
    spec = document("", tight)
    assert spec["components"]["schemas"]["SearchRequest"]["properties"]["text"]["maxLength"] == 77
    assert spec["components"]["schemas"]["SearchRequest"]["properties"]["parts"]["maxItems"] == 5
    assert "9 (setting explain_max_rows)" in json.dumps(spec)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(served):
    config = schemathesis.config.SchemathesisConfig.from_dict({
        "seed": SEED, "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "no-shrink": True,
                                     "database": "none"},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
                   "stateful": {"enabled": False}}})
    loaded = schemathesis.openapi.from_wsgi("/api/openapi.json", served["app"], config=config)

    @loaded.hook
    def map_case(context, case):
        """Valid image and sound parts are real files (the spec asks for decodable ones)."""
        if case.meta is None or not case.meta.generation.mode.is_positive or not isinstance(case.body, dict):
            return case
        files = {"image": served["png"], "audio": served["wav"]}
        for name, data in files.items():
            if name in case.body and case.media_type == "multipart/form-data":
                case.body[name] = data
        for part in case.body.get("parts") or []:
            if isinstance(part, dict) and part.get("kind") in files:
                part["value"] = base64.b64encode(files[part["kind"]]).decode()
        return case

    @loaded.hook
    def filter_case(context, case):
        if case.meta is None or not case.meta.generation.mode.is_positive:
            return True
        if case.operation.path == "/api/search":
            return follows_the_rules(case.body if case.method == "POST" else case.query or {}, served["settings"])
        if case.operation.path == "/api/classify":  # exactly one thing to classify (the schema's oneOf)
            return isinstance(case.body, dict) and sum(k in case.body for k in ("image", "audio", "text")) == 1
        return True

    return loaded


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck), derandomize=True,
                     database=None, max_examples=MAX_EXAMPLES)
def test_the_api_keeps_to_its_spec(case, served):
    case.call_and_validate(app=served["app"], checks=CHECKS)
