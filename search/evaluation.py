"""Retrieval metrics over ranked lists: recall@k, reciprocal rank and nDCG@k with binary gains, their means
over queries, overall and per (query modality → result modality). Pure functions: ids in, numbers out;
``mmsearch evaluate`` runs the searches and reads the CSV.

    relevant {a, b}, ranking [x, a, y, b]:  recall@1 0, recall@5 1, reciprocal rank 1/2,
    nDCG@10 (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)
"""
from __future__ import annotations

import math
from typing import Hashable, Iterable, Mapping, Sequence

CUTOFFS = (1, 5, 10)  # recall@1/5/10
NDCG_AT = 10
METRICS = tuple(f"recall@{k}" for k in CUTOFFS) + ("mrr", f"ndcg@{NDCG_AT}")
MIXED = "mixed"


def _relevant(relevant: Iterable[Hashable]) -> set:
    out = set(relevant)
    if not out:
        raise ValueError("a query needs at least one relevant item")
    return out


def recall_at(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """|relevant ∩ top k| / |relevant|."""
    wanted = _relevant(relevant)
    return len(wanted & set(ranked[:k])) / len(wanted)


def reciprocal_rank(ranked: Sequence[Hashable], relevant: Iterable[Hashable]) -> float:
    """1 / the rank (from 1) of the first relevant item; 0 when none is in the list."""
    wanted = _relevant(relevant)
    return next((1.0 / rank for rank, item in enumerate(ranked, 1) if item in wanted), 0.0)


def ndcg_at(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int = NDCG_AT) -> float:
    """Binary gains: DCG = Σ rel_i / log2(i + 1) over ranks i = 1..k, divided by the DCG of the ideal list
    (min(|relevant|, k) relevant items first)."""
    wanted = _relevant(relevant)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, item in enumerate(ranked[:k], 1) if item in wanted)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
    return dcg / ideal


def ranks(ranked: Sequence[Hashable], relevant: Iterable[Hashable]) -> list[int | None]:
    """Each relevant item's rank (from 1) in the list, None where it is not in it; in sorted order of the
    relevant items."""
    where = {item: rank for rank, item in reversed(list(enumerate(ranked, 1)))}
    return [where.get(item) for item in sorted(_relevant(relevant), key=str)]


def scores(ranked: Sequence[Hashable], relevant: Iterable[Hashable]) -> dict[str, float]:
    """Every metric of one query, keyed as in METRICS."""
    wanted = _relevant(relevant)
    out = {f"recall@{k}": recall_at(ranked, wanted, k) for k in CUTOFFS}
    out["mrr"] = reciprocal_rank(ranked, wanted)
    out[f"ndcg@{NDCG_AT}"] = ndcg_at(ranked, wanted, NDCG_AT)
    return out


def modality_of(modalities: Iterable[str]) -> str:
    """One modality for a query's parts or its relevant items: the one they share, else 'mixed'."""
    found = set(modalities)
    if not found:
        raise ValueError("no modality given")
    return found.pop() if len(found) == 1 else MIXED


def mean(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The metrics' means over queries, with their count as ``queries``."""
    if not rows:
        raise ValueError("no queries to average")
    out: dict[str, float] = {"queries": len(rows)}
    out.update({metric: sum(row[metric] for row in rows) / len(rows) for metric in METRICS})
    return out


def summary(rows: Sequence[tuple[str, str, Mapping[str, float]]]) -> dict:
    """(query modality, result modality, scores) per query → the means overall and per modality pair
    (pairs in name order, each with its count)."""
    groups: dict[tuple[str, str], list[Mapping[str, float]]] = {}
    for query, result, row in rows:
        groups.setdefault((query, result), []).append(row)
    return {"overall": mean([row for _, _, row in rows]),
            "by_modality": [{"query": query, "result": result, **mean(group)}
                            for (query, result), group in sorted(groups.items())]}


def difference(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """b − a for every metric."""
    return {metric: b[metric] - a[metric] for metric in METRICS}
