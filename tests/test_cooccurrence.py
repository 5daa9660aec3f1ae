"""The co-occurrence core (recs.retrieval.cooccurrence) and its three callers.

The `*_unchanged_on_demo_shop` tests recompute, inline, the formulas each caller used before it
moved onto the core, and require bit-identical outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recs.bundling.cooc import CoocStats
from recs.evaluation.baselines.cooc import CoocRecommender
from recs.evaluation.protocol import training_popularity
from recs.retrieval.cooccurrence import (
    cooccurrence,
    cosine,
    first_purchase_times,
    incidence,
    incidence_matrix,
    item_frequency,
    prune_rows,
    purchase_popularity,
    top_neighbours,
    trending_purchases,
)
from recs.retrieval.copurchase import USER_LEVEL_WEIGHT, copurchase_neighbours

ROW_OF = {"a": 0, "b": 1, "c": 2, "d": 3}


def _events(rows: list[tuple[str | None, str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"basket_id": pl.Utf8, "user_id": pl.Utf8, "item_id": pl.Utf8, "event": pl.Utf8}, orient="row"
    )


# baskets: b1 {a, b, c}, b2 {a, b}, b3 {b, d}; b1 lists `a` twice; a view, an unknown item and a
# purchase without basket are not basket members.
EVENTS = _events(
    [
        ("b1", "u1", "a", "purchase"),
        ("b1", "u1", "a", "purchase"),
        ("b1", "u1", "b", "purchase"),
        ("b1", "u1", "c", "purchase"),
        ("b2", "u2", "a", "purchase"),
        ("b2", "u2", "b", "purchase"),
        ("b3", "u2", "b", "purchase"),
        ("b3", "u2", "d", "purchase"),
        ("b3", "u2", "zz", "purchase"),
        (None, "u3", "c", "purchase"),
        (None, "u3", "d", "view"),
    ]
)
# co-occurrences in baskets: ab 2, ac 1, bc 1, bd 1; frequencies a 2, b 3, c 1, d 1
COUNTS = np.array([[0, 2, 1, 0], [2, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 0]], dtype=np.float32)
FREQ = np.array([2, 3, 1, 1], dtype=np.float32)


def _baskets() -> sp.csr_matrix:
    return incidence(EVENTS.filter(pl.col("event") == "purchase"), "basket_id", ROW_OF, 4)


# -- the core -----------------------------------------------------------------------------------------


def test_incidence_binary_and_weighted() -> None:
    baskets = _baskets()
    assert baskets.dtype == np.float32
    np.testing.assert_array_equal(baskets.toarray(), [[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 0, 1]])
    np.testing.assert_array_equal(item_frequency(baskets), FREQ)
    weighted = incidence(
        EVENTS.with_columns(pl.lit(0.5).alias("w")), "user_id", ROW_OF, 4, weights="w", dtype=np.float64
    )
    assert weighted.dtype == np.float64
    # u1: a twice, b, c; u2: a, b twice, d (zz is not in the catalog); u3: c, d (the view too)
    np.testing.assert_array_equal(weighted.toarray(), [[1, 0.5, 0.5, 0], [0.5, 1, 0, 0.5], [0, 0, 0.5, 0.5]])


def test_incidence_matrix_codes_and_errors() -> None:
    m = incidence_matrix(np.array([7, 7, 3, 7]), np.array([1, 1, 0, 2]), 3, dtype=np.float64)
    np.testing.assert_array_equal(m.toarray(), [[1, 0, 0], [0, 1, 1]])  # groups renumbered in order
    with pytest.raises(ValueError, match="differ"):
        incidence_matrix(np.array([0, 1]), np.array([0]), 3)
    with pytest.raises(ValueError, match="lie in"):
        incidence_matrix(np.array([0]), np.array([3]), 3)
    with pytest.raises(ValueError, match="weights"):
        incidence_matrix(np.array([0]), np.array([0]), 3, weights=np.array([1.0, 2.0]))


def test_cooccurrence_counts_drop_the_diagonal() -> None:
    counts = cooccurrence(_baskets())
    assert counts.dtype == np.float32 and counts.has_sorted_indices
    np.testing.assert_array_equal(counts.toarray(), COUNTS)
    assert counts.diagonal().tolist() == [0, 0, 0, 0] and counts.nnz == 8


def test_cooccurrence_adds_weighted_parts() -> None:
    baskets = _baskets()
    users = incidence(EVENTS.filter(pl.col("event") == "purchase"), "user_id", ROW_OF, 4)
    # users: u1 {a, b, c}, u2 {a, b, d}, u3 {c}
    user_counts = np.array([[0, 2, 1, 1], [2, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=np.float32)
    got = cooccurrence(baskets, also=[(users, 0.5)])
    np.testing.assert_array_equal(got.toarray(), COUNTS + np.float32(0.5) * user_counts)
    # the diagonal the normalisations use: basket frequency + 0.5 * user frequency
    d = FREQ + np.float32(0.5) * np.array([2, 2, 2, 1], dtype=np.float32)
    cos = cooccurrence(baskets, "cosine", also=[(users, 0.5)]).toarray()
    want = (COUNTS + np.float32(0.5) * user_counts) / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(cos, want, rtol=1e-6)
    with pytest.raises(ValueError, match="differ in items"):
        cooccurrence(baskets, also=[(sp.csr_matrix((2, 5), dtype=np.float32), 1.0)])


def test_cosine_floor_and_shrink() -> None:
    baskets = _baskets()
    outer = np.outer(FREQ, FREQ)
    np.testing.assert_allclose(cooccurrence(baskets, "cosine").toarray(), COUNTS / np.sqrt(outer), rtol=1e-6)
    # a, b: 2 / sqrt(2 * 3); c, b: 1 / sqrt(1 * 3); with shrink 1: 2 / (sqrt(6) + 1)
    shrunk = cooccurrence(baskets, "cosine", shrink=1.0).toarray()
    np.testing.assert_allclose(shrunk[0, 1], 2 / (np.sqrt(6) + 1), rtol=1e-6)
    floored = cooccurrence(baskets, "cosine", floor=2.0).toarray()
    np.testing.assert_allclose(floored[2, 1], 1 / np.sqrt(2 * 3), rtol=1e-6)  # c's frequency 1 -> 2
    np.testing.assert_allclose(floored[0, 1], 2 / np.sqrt(2 * 3), rtol=1e-6)
    # elementwise form: the inputs' dtype, floor applied to both sides
    got = cosine(np.float32([2, 0]), np.float32([0.5, 4]), np.float32([2, 9]), floor=1.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [2 / np.sqrt(2), 0])
    # scaled_cosine: the same cosine as a diagonal scaling, equal up to rounding
    scaled = cooccurrence(baskets, "scaled_cosine", floor=1.0)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.toarray(), cooccurrence(baskets, "cosine", floor=1.0).toarray(), rtol=1e-6)
    with pytest.raises(ValueError, match="normalise"):
        cooccurrence(baskets, "lift")  # type: ignore[arg-type]


def test_top_neighbours_order_ties_and_padding() -> None:
    m = sp.csr_matrix(
        np.array([[0, 0.5, 0.9, 0.5, 0], [0, 0, 0, 0, 0], [0.2, 0, 0, 0, 0.2]], dtype=np.float32)
    )
    rows, scores = top_neighbours(m, 3)
    assert rows.dtype == np.int32 and scores.dtype == np.float32
    assert rows.tolist() == [[2, 1, 3], [-1, -1, -1], [0, 4, -1]]  # ties: the lower column first
    np.testing.assert_array_equal(scores, np.float32([[0.9, 0.5, 0.5], [0, 0, 0], [0.2, 0.2, 0]]))
    rows, scores = top_neighbours(m, 2)
    assert rows.tolist() == [[2, 1], [-1, -1], [0, 4]]
    assert top_neighbours(m, 0)[0].shape == (3, 0)
    # the same order for unsorted indices
    shuffled = sp.csr_matrix((np.float32([0.5, 0.5, 0.9, 0.2, 0.2]), np.array([3, 1, 2, 4, 0]), m.indptr), shape=m.shape)
    assert top_neighbours(shuffled, 2)[0].tolist() == [[2, 1], [-1, -1], [0, 4]]


def test_prune_rows_keeps_the_best_per_row() -> None:
    m = sp.csr_matrix(np.array([[0, 0.5, 0.9, 0.5], [0.1, 0, 0, 0], [0, 0, 0, 0]]))
    pruned = prune_rows(m, 2)
    assert pruned.dtype == np.float64 and pruned.shape == m.shape and pruned.has_sorted_indices
    np.testing.assert_array_equal(pruned.toarray(), [[0, 0.5, 0.9, 0], [0.1, 0, 0, 0], [0, 0, 0, 0]])
    assert prune_rows(m, 0).nnz == 0
    assert prune_rows(m, 10).toarray().tolist() == m.toarray().tolist()


def test_empty_inputs() -> None:
    nothing = EVENTS.head(0)
    baskets = incidence(nothing, "basket_id", ROW_OF, 4)
    assert baskets.shape == (0, 4) and baskets.dtype == np.float32
    assert incidence(EVENTS, "basket_id", {}, 0).shape == (0, 0)
    for normalise in ("count", "cosine", "scaled_cosine"):
        m = cooccurrence(baskets, normalise)
        assert m.shape == (4, 4) and m.nnz == 0 and m.dtype == np.float32
    rows, scores = top_neighbours(cooccurrence(baskets), 2)
    assert (rows == -1).all() and (scores == 0).all()
    assert prune_rows(cooccurrence(baskets), 2).nnz == 0
    np.testing.assert_array_equal(purchase_popularity(nothing, ROW_OF, 4), np.zeros(4))
    assert item_frequency(baskets).tolist() == [0, 0, 0, 0]


def test_purchase_popularity() -> None:
    pop = purchase_popularity(EVENTS, ROW_OF, 4)
    assert pop.dtype == np.float64
    assert pop.tolist() == [3, 3, 2, 1]  # purchase rows; the view and the unknown item not counted
    assert purchase_popularity(EVENTS.drop("event"), ROW_OF, 4).tolist() == [3, 3, 2, 2]
    assert purchase_popularity(EVENTS, {"b": 0}, 1).tolist() == [3]


def test_trending_purchases_halve_every_half_life() -> None:
    day = 86400.0
    events = pl.DataFrame({
        "item_id": ["a", "a", "b", "c", "zz", "d"],
        "timestamp": pl.Series([int(d * day * 1e6) for d in (10, 3, 10, 12, 10, 10)]).cast(pl.Datetime("us", "UTC")),
        "event": ["purchase", "purchase", "purchase", "purchase", "purchase", "view"],
    })
    got = trending_purchases(events, ROW_OF, 4, now=10 * day, half_life_days=7.0)
    # a: one now + one a half-life ago; c after `now` weighs 1; the view and the unknown item: 0
    np.testing.assert_allclose(got, [1.5, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(trending_purchases(events.drop("event"), ROW_OF, 4, now=17 * day, half_life_days=7.0),
                               [0.5 + 0.25, 0.5, 2 ** (-5 / 7), 0.5])
    assert trending_purchases(events.head(0), ROW_OF, 4, now=0.0, half_life_days=7.0).tolist() == [0.0] * 4
    # first purchases: a on day 3; d was only viewed
    assert (first_purchase_times(events, ROW_OF, 4) / day).tolist() == [3.0, 10.0, 12.0, np.inf]


# -- the callers, unchanged ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(small_demo_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    from recs.data.load import load_dataset

    dataset, _ = load_dataset(small_demo_dir)
    row_of = {item: row for row, item in enumerate(dataset.items["item_id"].to_list())}
    return dataset.items, dataset.events, row_of


def _old_incidence(events: pl.DataFrame, group: str, row_of: dict[str, int], n_items: int) -> sp.csr_matrix:
    pairs = events.filter(pl.col(group).is_not_null()).select(group, "item_id").unique()
    pairs = pairs.filter(pl.col("item_id").is_in(list(row_of)))
    if pairs.height == 0:
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    groups = pairs[group].cast(pl.Categorical).to_physical().to_numpy()
    cols = np.array([row_of[i] for i in pairs["item_id"].to_list()], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (groups, cols)), shape=(int(groups.max()) + 1, n_items))


def _old_copurchase(events: pl.DataFrame, row_of: dict[str, int], n_items: int, top_m: int) -> tuple[np.ndarray, np.ndarray]:
    purchases = events.filter(pl.col("event") == "purchase")
    baskets = _old_incidence(purchases, "basket_id", row_of, n_items)
    users = _old_incidence(purchases, "user_id", row_of, n_items)
    counts = (baskets.T @ baskets).tocsr() if baskets.shape[0] else sp.csr_matrix((n_items, n_items), dtype=np.float32)
    if users.shape[0]:
        counts = counts + USER_LEVEL_WEIGHT * (users.T @ users).tocsr()
    counts = sp.csr_matrix(counts, dtype=np.float32)
    counts.setdiag(0.0)
    counts.eliminate_zeros()
    freq = np.asarray(baskets.sum(axis=0)).ravel() + USER_LEVEL_WEIGHT * np.asarray(users.sum(axis=0)).ravel()
    norm = 1.0 / np.sqrt(np.maximum(freq, 1.0))
    similar = (sp.diags(norm) @ counts @ sp.diags(norm)).tocsr()
    rows = np.full((n_items, top_m), -1, dtype=np.int32)
    scores = np.zeros((n_items, top_m), dtype=np.float32)
    for item in range(n_items):
        start, end = similar.indptr[item], similar.indptr[item + 1]
        cols, vals = similar.indices[start:end], similar.data[start:end]
        keep = np.lexsort((cols, -vals))[:top_m]
        rows[item, : len(keep)] = cols[keep]
        scores[item, : len(keep)] = vals[keep]
    return rows, np.nan_to_num(scores)


@pytest.mark.parametrize("top_m", [50, 3])
def test_copurchase_unchanged_on_demo_shop(demo, top_m: int) -> None:
    _, events, row_of = demo
    rows, scores = copurchase_neighbours(events, row_of, len(row_of), top_m)
    old_rows, old_scores = _old_copurchase(events, row_of, len(row_of), top_m)
    assert rows.dtype == old_rows.dtype and scores.dtype == old_scores.dtype
    np.testing.assert_array_equal(rows, old_rows)
    np.testing.assert_array_equal(scores, old_scores)
    assert (rows >= 0).sum() > len(row_of)  # the demo shop has co-purchases to compare


class _Seen(CoocRecommender):
    """The baseline, remembering the prepared events it was fitted on."""

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        self.seen = events
        super()._fit(events, items)


def _old_baseline_sim(model: _Seen) -> sp.csr_matrix:
    from recs.evaluation.baselines._common import recent_items

    n_items = len(model._item_ids)
    purchases = model.seen.filter(pl.col("event") == "purchase")
    in_basket = (
        purchases.filter(pl.col("basket_id").is_not_null())
        .select("basket_id", "_i")
        .unique()
        .with_columns(pl.col("basket_id").rank("dense").cast(pl.Int64).sub(1).alias("_b"))
    )
    n_baskets = int(in_basket["_b"].max()) + 1 if in_basket.height else 0
    baskets = sp.csr_matrix(
        (np.ones(in_basket.height), (in_basket["_b"].to_numpy(), in_basket["_i"].to_numpy())), shape=(n_baskets, n_items)
    )
    history = recent_items(purchases, model.max_history, model.half_life).with_columns(pl.lit(1.0).alias("one"))
    owned = model._matrix(history, "one")
    counts = (baskets.T @ baskets + model.user_weight * (owned.T @ owned)).tocsr()
    diag = counts.diagonal()
    counts.setdiag(0.0)
    counts.eliminate_zeros()
    coo = counts.tocoo()
    norm = np.sqrt(diag[coo.row] * diag[coo.col]) + model.shrink
    sim = sp.csr_matrix((coo.data / np.maximum(norm, 1e-12), (coo.row, coo.col)), shape=counts.shape).tocoo()
    frame = (
        pl.DataFrame({"r": sim.row.astype(np.int64), "c": sim.col.astype(np.int64), "v": sim.data})
        .sort(["r", "v", "c"], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("r") < model.neighbours)
    )
    out = sp.csr_matrix((frame["v"].to_numpy(), (frame["r"].to_numpy(), frame["c"].to_numpy())), shape=sim.shape)
    out.sort_indices()
    return out


@pytest.mark.parametrize(
    "params", [{}, {"shrink": 0.0, "neighbours": 3}, {"user_weight": 0.0, "max_history": 2, "half_life": 1.0}]
)
def test_cooc_baseline_unchanged_on_demo_shop(demo, params: dict) -> None:
    items, events, _ = demo
    model = _Seen(**params).fit(events, items)
    old = _old_baseline_sim(model)
    assert model._sim.dtype == old.dtype and model._sim.shape == old.shape and old.nnz
    np.testing.assert_array_equal(model._sim.indptr, old.indptr)
    np.testing.assert_array_equal(model._sim.indices, old.indices)
    np.testing.assert_array_equal(model._sim.data, old.data)


def _old_from_sets(sets: list[np.ndarray], n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sets = [np.unique(np.asarray(s, dtype=np.int64)) for s in sets]
    sets = [s for s in sets if len(s)]
    cols = np.concatenate(sets)
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    members = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(sets), n_items))
    freq = np.asarray(members.sum(axis=0), dtype=np.float32).ravel()
    pairs = (members.T @ members).tocsr()
    pairs.setdiag(0.0)
    pairs.eliminate_zeros()
    pairs.sort_indices()
    coo = pairs.tocoo()
    keys = coo.row.astype(np.int64) * n_items + coo.col.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    return keys[order], coo.data[order].astype(np.float32), freq


def test_cooc_stats_unchanged_on_demo_shop(demo) -> None:
    _, events, row_of = demo
    n = len(row_of)
    baskets = events.filter(pl.col("basket_id").is_not_null()).group_by("basket_id", maintain_order=True).agg("item_id")
    sets = [np.array([row_of[i] for i in s]) for s in baskets["item_id"].to_list()] + [np.zeros(0, np.int64)]
    stats = CoocStats.from_sets(sets, n)
    keys, counts, freq = _old_from_sets(sets, n)
    for got, want in ((stats.keys, keys), (stats.counts, counts), (stats.freq, freq)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert stats.n_sets == len(sets) - 1

    rng = np.random.default_rng(0)
    i, j = rng.integers(-1, n, (2, 64, 5))
    own_i, own_j = rng.random((2, 64, 5)) < 0.3
    for oi, oj in ((False, False), (own_i, own_j)):
        both = np.logical_and(oi, oj)
        c = np.maximum(stats.pair_counts(i, j) - both.astype(np.float32), 0.0)
        fi = np.maximum(stats.item_freq(i, oi), 1.0)
        fj = np.maximum(stats.item_freq(j, oj), 1.0)
        np.testing.assert_array_equal(stats.pair_features(i, j, oi, oj)[..., 1], c / np.sqrt(fi * fj))
    for row in range(n):
        cols, c = stats.row(row)
        want = c / np.sqrt(max(float(stats.freq[row]), 1.0) * np.maximum(stats.freq[cols], 1.0))
        np.testing.assert_array_equal(stats.row_features(row)[cols, 1], want)


def test_popularity_unchanged_on_demo_shop(demo) -> None:
    items, events, row_of = demo
    ids = items["item_id"].to_list()
    # retrieval.retriever.Retriever's constructor
    purchases = events.filter(pl.col("item_id").is_in(ids), pl.col("event") == "purchase")
    want = np.zeros(len(ids), dtype=np.float64)
    for item, n in purchases.group_by("item_id").len().iter_rows():
        want[row_of[item]] = n
    got = purchase_popularity(events, row_of, len(ids))
    assert got.dtype == np.float64 and want.sum() > 0
    np.testing.assert_array_equal(got, want)

    # evaluation.protocol.training_popularity, with and without purchases
    for fit in (events, events.filter(pl.col("event") != "purchase"), events.drop("event"), events.head(0)):
        kept = fit
        if "event" in kept.columns and kept.filter(pl.col("event") == "purchase").height:
            kept = kept.filter(pl.col("event") == "purchase")
        counts = dict(kept.group_by("item_id").len().iter_rows())
        old = np.array([counts.get(i, 0) for i in ids], dtype=np.float64)
        np.testing.assert_array_equal(training_popularity(fit, ids), old)
