"""The request path reads scores on the candidates only (rowscores.py) and must answer exactly
as scoring the whole catalog would: same candidates, same order, same features."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recs.retrieval.candidates import generate_candidates
from recs.retrieval.filters import Filters
from recs.retrieval.retriever import Retriever
from recs.retrieval.rowscores import DenseScores, SparseScores, VectorScores, blend
from recs.retrieval.tifu import TifuConfig, TifuModel


def test_candidates_equal_the_full_catalog_computation(trained_artifact: Path) -> None:
    r = Retriever.load(trained_artifact)
    assert r.index.kind == "flat"  # exact search: the only difference allowed is float rounding
    cfg, s = r.config.candidates, r.stats
    assert s.factors is not None and s.tifu is not None
    for user in r.users.user_ids()[:30]:
        context = r.context(user_id=user)
        vector = r.user_vectors([context.state])[0]
        for filters in (Filters(), Filters(in_stock_only=True, exclude_bought=True, price_max=50.0)):
            served = r.candidates(context, vector, filters)
            tower_filters = replace(filters, exclude_bought=filters.exclude_bought or cfg.two_tower_new_only)
            tt_rows, _ = r.search(vector, cfg.n_two_tower, tower_filters, context.history)
            full = generate_candidates(
                tt_rows, r.item_vectors @ vector, context.history, s.now, s.neighbour_rows, s.neighbour_scores,
                s.popularity, s.popular_rows, cfg, allowed=r.allowed_mask(filters, context.history),
                rebuy_rate=s.rebuy_rate, als_scores_all=s.factors.scores(user),
                tifu_all=s.tifu.scores(user, context.history.rows, context.history.times),
            )
            assert served.item_rows.tolist() == full.item_rows.tolist()
            assert served.order().tolist() == full.order().tolist()
            np.testing.assert_array_equal(served.merged_score, full.merged_score)
            for name, values in full.features.items():
                np.testing.assert_allclose(served.features[name], values, rtol=1e-5, atol=1e-6, err_msg=name)


def test_top_keeps_the_lower_rows_of_a_tie() -> None:
    scores = np.array([1.0, 2.0, 2.0, 2.0, 0.0, 3.0], dtype=np.float32)
    assert DenseScores(scores).top(3).tolist() == [5, 1, 2]
    assert SparseScores(np.arange(6), scores).top(3).tolist() == [5, 1, 2]
    assert DenseScores(scores).top(10, positive_only=True).tolist() == [5, 1, 2, 3, 0]
    sparse = SparseScores(np.array([2, 7]), np.array([0.5, 0.25]))
    np.testing.assert_array_equal(sparse.at(np.array([0, 2, 7, 9])), [0.0, 0.5, 0.25, 0.0])
    np.testing.assert_array_equal(blend(0.5, sparse, SparseScores(np.array([0]), np.array([1.0]))).at(np.array([0, 2])), [0.5, 0.25])


def test_vector_scores_find_the_best_rows_with_faiss() -> None:
    import faiss

    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(500, 8)).astype(np.float32)
    vector = rng.normal(size=8).astype(np.float32)
    index = faiss.IndexFlatIP(8)
    index.add(matrix)
    served = VectorScores(matrix, vector, index)
    assert served.top(20).tolist() == DenseScores(matrix @ vector).top(20).tolist()
    np.testing.assert_allclose(served.at(np.array([3, 9])), (matrix @ vector)[[3, 9]], rtol=1e-6)


def test_sparse_tifu_neighbours_match_the_dense_scan() -> None:
    rng = np.random.default_rng(1)
    dense = (rng.random((60, 40)) < 0.15) * rng.random((60, 40))
    model = TifuModel(np.array([f"u{i}" for i in range(60)]), sp.csr_matrix(dense.astype(np.float32)),
                      TifuConfig(neighbours=7))
    rows, times = np.array([1, 5, 5, 9, 30]), np.array([0.0, 0.0, 10.0, 10.0, 20.0])
    own, neighbours = model.scores("u3", rows, times)
    sparse_own, sparse_neighbours = model.sparse_scores("u3", rows, times)
    everything = np.arange(40)
    np.testing.assert_allclose(sparse_own.at(everything), own, rtol=1e-6)
    np.testing.assert_allclose(sparse_neighbours.at(everything), neighbours, rtol=1e-5, atol=1e-7)
    assert neighbours.any()


@pytest.mark.parametrize("filters", [Filters(), Filters(exclude=("nope",), exclude_bought=True)])
def test_allows_reads_the_mask_on_given_rows(trained_artifact: Path, filters: Filters) -> None:
    r = Retriever.load(trained_artifact)
    bought = r.context(user_id=r.users.user_ids()[0]).history.rows
    mask = r.masks.mask(filters, bought)
    allows = r.masks.allows(filters, bought)
    rows = np.arange(len(r.catalog))
    assert (allows is None) == (mask is None)
    if allows is not None and mask is not None:
        assert allows(rows).tolist() == mask.tolist()
