"""Metric values against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recs.evaluation.metrics import (
    coverage,
    hit_matrix,
    hit_rate_at_k,
    intra_list_diversity,
    mean_ranking_metrics,
    mrr,
    ndcg_at_k,
    popularity_bias,
    popularity_percentiles,
    recall_at_k,
)

LOG3 = math.log2(3)


def test_recall_divides_by_min_relevant_k() -> None:
    # 4 relevant, k = 2: the best possible is 2 hits, so 1 hit is 0.5, not 0.25.
    assert recall_at_k(["a", "x", "b"], {"a", "b", "c", "d"}, 2) == pytest.approx(0.5)
    assert recall_at_k(["a", "b"], {"a", "b", "c", "d"}, 2) == pytest.approx(1.0)
    # 2 relevant, k = 10: plain recall.
    assert recall_at_k(["x", "a"], {"a", "b"}, 10) == pytest.approx(0.5)
    # Shorter list than k: missing slots are misses.
    assert recall_at_k(["a"], {"a", "b"}, 5) == pytest.approx(0.5)


def test_ndcg_binary_gains() -> None:
    # hits at ranks 2 and 3, 2 relevant: (1/log2 3 + 1/2) / (1 + 1/log2 3)
    want = (1 / LOG3 + 0.5) / (1 + 1 / LOG3)
    assert ndcg_at_k(["x", "a", "b"], {"a", "b"}, 3) == pytest.approx(want)
    # 3 relevant, k = 2: ideal DCG over 2 slots.
    assert ndcg_at_k(["a", "x"], {"a", "b", "c"}, 2) == pytest.approx(1 / (1 + 1 / LOG3))
    assert ndcg_at_k(["a", "b"], {"a", "b", "c"}, 2) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"a"}, 2) == 0.0


def test_mrr_cut_at_k() -> None:
    assert mrr(["x", "y", "a"], {"a"}, 3) == pytest.approx(1 / 3)
    assert mrr(["x", "y", "a"], {"a"}, 2) == 0.0
    assert mrr(["b", "a"], {"a", "b"}, 2) == 1.0


def test_hit_rate() -> None:
    assert hit_rate_at_k(["x", "a"], {"a"}, 2) == 1.0
    assert hit_rate_at_k(["x", "a"], {"a"}, 1) == 0.0


def test_empty_relevant_is_undefined_and_skipped() -> None:
    for fn in (recall_at_k, ndcg_at_k, mrr, hit_rate_at_k):
        assert fn(["a"], set(), 1) is None
    hits, n_rel = hit_matrix(
        [["a", "b"], ["a", "b"], ["x", "b"]], [{"a"}, set(), {"b", "c", "d"}], 2
    )
    assert n_rel.tolist() == [1, 0, 3]
    got = mean_ranking_metrics(hits, n_rel, ks=(1, 2))
    assert got["users"] == 2.0  # the empty user is not counted as a zero
    assert got["recall@1"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["recall@2"] == pytest.approx((1.0 + 0.5) / 2)
    assert got["mrr@2"] == pytest.approx((1.0 + 0.5) / 2)
    assert got["hit_rate@2"] == pytest.approx(1.0)
    assert got["ndcg@2"] == pytest.approx((1.0 + (1 / LOG3) / (1 + 1 / LOG3)) / 2)


def test_no_user_gives_zeros_not_nan() -> None:
    hits, n_rel = hit_matrix([["a"]], [set()], 3)
    got = mean_ranking_metrics(hits, n_rel, ks=(3,))
    assert got == {"recall@3": 0.0, "ndcg@3": 0.0, "mrr@3": 0.0, "hit_rate@3": 0.0, "users": 0.0}
    hits, n_rel = hit_matrix([], [], 3)
    assert all(math.isfinite(v) for v in mean_ranking_metrics(hits, n_rel, (3,)).values())


def test_bad_k() -> None:
    with pytest.raises(ValueError):
        recall_at_k(["a"], {"a"}, 0)
    with pytest.raises(ValueError):
        hit_matrix([["a"]], [{"a"}, {"b"}], 1)


def test_coverage() -> None:
    lists = [["a", "b", "c"], ["a", "d", "e"]]
    assert coverage(lists, 10, 2) == pytest.approx(3 / 10)  # a, b, d
    assert coverage(lists, 10, 3) == pytest.approx(5 / 10)
    assert coverage([], 10, 3) == 0.0
    assert coverage(lists, 0, 3) == 0.0


def test_intra_list_diversity() -> None:
    cat = {"a": "Food", "b": "Food", "c": "Home", "d": None}
    # [a, b, c]: pairs ab same, ac / bc differ -> 2/3; [a, c]: 1.0; mean 5/6.
    assert intra_list_diversity([["a", "b", "c"], ["a", "c"]], cat, 3) == pytest.approx(5 / 6)
    # Unknown categories are left out; a list with < 2 known is skipped.
    assert intra_list_diversity([["a", "d"], ["a", "b"]], cat, 2) == pytest.approx(0.0)
    assert intra_list_diversity([["a", "b"]], {}, 2) is None
    assert intra_list_diversity([["d", "x"]], cat, 2) is None


def test_popularity_percentiles_and_bias() -> None:
    pct = popularity_percentiles(np.array([3.0, 2.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(pct, [0.9, 0.7, 0.3, 0.3, 0.3])
    assert ((pct >= 0.0) & (pct <= 1.0)).all()
    # A uniform recommender sits at 0.5 on average.
    assert pct.mean() == pytest.approx(0.5)
    table = dict(zip("abcde", pct, strict=True))
    assert popularity_bias([["a", "b"], ["a", "c"]], table, 2) == pytest.approx(
        (0.9 + 0.7 + 0.9 + 0.3) / 4
    )
    assert popularity_bias([["a", "zzz"]], table, 2) == pytest.approx(0.45)
    assert popularity_bias([], table, 2) == 0.0
    assert popularity_percentiles(np.zeros(0)).size == 0
