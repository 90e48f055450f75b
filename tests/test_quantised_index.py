"""Index types that hold vectors in less memory (issue #13 point 2): float16 (SQfp16) and 8-bit scalar
quantised (SQ8) codes in the FAISS cache while SQL keeps full float32, with what they cost in fidelity."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmsearch.library import Library
from mmsearch.search.request import QueryPart, SearchRequest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.mark.parametrize("index_type, code_bytes, tolerance", [("SQfp16", 2, 1e-3), ("SQ8", 1, 1e-2)])
def test_a_quantised_index_searches_like_the_exact_one_in_less_memory(settings, tmp_path, index_type, code_bytes,
                                                                      tolerance):
    exact = Library(settings)
    exact.run_index([str(SAMPLES)])
    small = Library(settings.replace(data_dir=str(tmp_path / "small"), index_type=index_type))
    small.run_index([str(SAMPLES)])
    assert small.verify() == []
    stats, flat = small.stats()["index"], exact.stats()["index"]
    assert stats["type"] == index_type and stats["ntotal"] == flat["ntotal"]
    assert stats["ram_bytes"] == stats["ntotal"] * (64 * code_bytes + 8) < flat["ram_bytes"]
    for parts in ([QueryPart("text", "a red apple")],
                  [QueryPart("image", (SAMPLES / "photos" / "sunset.jpg").read_bytes())],
                  [QueryPart("text", "a boat"), QueryPart("text", "the sea", -1.0)]):
        for fusion in ("early", "rrf"):
            request = SearchRequest(parts, k=10, fusion=fusion)
            want = {h.id: h.score for h in exact.search(request).results}
            got = {h.id: h.score for h in small.search(request).results}
            assert set(got) == set(want)  # ten items: all of them, each scored within the codes' precision
            if fusion == "early":
                assert max(abs(got[i] - want[i]) for i in want) <= tolerance, (index_type, got, want)
    # SQL keeps full precision: the item's own vector read back is the exact one
    hit = small.search(SearchRequest([QueryPart("image", (SAMPLES / "photos" / "sunset.jpg").read_bytes())],
                                     k=1, explain=True)).results[0]
    assert hit.item.path.endswith("sunset.jpg") and hit.parts[0]["score"] == pytest.approx(1.0, abs=1e-5)
