"""The ALS item-factor index of large catalogs (recs.retrieval.factors.FactorIndex): it proposes
the rows with the largest inner product, rescored exactly, and travels in the artifact as bytes."""

from __future__ import annotations

import numpy as np
import pytest

from recs.retrieval import factors as factors_module
from recs.retrieval.factors import INDEX_FILE, FactorIndex, UserItemFactors


def _factors(n: int, f: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, f))
    items = (centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, f))) * rng.gamma(2, 0.5, (n, 1))
    users = centers[rng.integers(0, 40, 20)] + 0.5 * rng.standard_normal((20, f))
    return items.astype(np.float32), users.astype(np.float32)


def test_index_finds_most_of_the_exact_top_and_scores_exactly() -> None:
    items, users = _factors(20_000)
    model = UserItemFactors(np.array([f"u{i}" for i in range(len(users))]), users, items, FactorIndex.build(items))
    recalls = []
    for n in range(len(users)):
        exact = np.argsort(-(items @ users[n]), kind="stable")[:50]
        scores = model.row_scores(f"u{n}")
        assert scores is not None
        got = scores.top(50)
        recalls.append(len(set(got) & set(exact)) / 50)
        assert np.allclose(scores.at(got), items[got] @ users[n], rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores.at(got)) <= 1e-6)  # best first
    assert np.mean(recalls) >= 0.9


def test_index_round_trips_through_the_saved_arrays() -> None:
    items, users = _factors(5_000)
    model = UserItemFactors(np.array([f"u{i}" for i in range(len(users))]), users, items, FactorIndex.build(items))
    arrays = model.arrays()
    assert arrays[INDEX_FILE].dtype == np.uint8
    back = UserItemFactors.from_files(arrays.__getitem__, arrays.__contains__)
    assert back.item_index is not None and back.item_index.ntotal == len(items)
    assert np.array_equal(back.row_scores("u3").top(20), model.row_scores("u3").top(20))


def test_large_catalogs_get_the_index_when_fitted_small_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    events = pl.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "item_id": ["i0", "i1", "i1", "i2", "i0"],
                           "event": ["purchase"] * 5})
    row_of = {f"i{n}": n for n in range(300)}
    assert factors_module.fit_factors(events, row_of, 300, factors=4, iterations=2).item_index is None
    monkeypatch.setattr(factors_module, "IVF_FROM_ITEMS", 300)
    fitted = factors_module.fit_factors(events, row_of, 300, factors=4, iterations=2)
    assert fitted.item_index is not None and INDEX_FILE in fitted.arrays()
