"""Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) via `implicit`: the one ALS
fit behind the engine's collaborative factors (`factors.py`) and the `als` evaluation baseline."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

__all__ = ["ALS_SEARCH", "Weighting", "confidence", "fit_als"]

Weighting = Literal["linear", "log", "bm25"]

# The validation search of every ALS in the project (the `als` baseline and the engine's factors):
# a coordinate search, one stage at a time, each stage keeping the best values of the ones before
# (19 fits instead of the 135 of the full grid). Regularization spans 0.01-100: on real shops with
# long histories the best is often 10 or more, and a grid that stops at 0.1 flatters every method
# compared with ALS. The first value of each stage is the starting point.
ALS_SEARCH: tuple[dict[str, tuple[object, ...]], ...] = (
    {"factors": (64,), "alpha": (1.0,), "iterations": (15,),
     "weighting": ("bm25", "log", "linear"), "regularization": (0.01, 0.1, 1.0, 10.0, 100.0)},
    {"factors": (64, 128, 256)},
    {"alpha": (1.0, 4.0, 16.0)},
)


def confidence(user_items: sp.csr_matrix, weighting: Weighting, alpha: float) -> sp.csr_matrix:
    """Confidence matrix from weighted interaction counts: alpha * r ("linear"), alpha * log1p(r)
    ("log": damps heavy repeat buyers), or alpha * BM25(r) over the item x user matrix (implicit's
    bm25_weight, K1=100, B=0.8: damps heavy users and very popular items)."""
    m = user_items.astype(np.float32).tocsr(copy=True)
    if weighting == "log":
        m.data = np.log1p(m.data)
    elif weighting == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        m = bm25_weight(m.T.tocsr(), K1=100, B=0.8).T.tocsr().astype(np.float32)
        # A user who touched most of the catalog gets idf <= 0; negative would mean "disliked".
        m.data = np.maximum(m.data, 1e-3)
    m.data *= np.float32(alpha)
    m.sort_indices()
    return m


def fit_als(
    user_items: sp.csr_matrix,
    factors: int,
    regularization: float,
    iterations: int,
    alpha: float,
    weighting: Weighting,
    num_threads: int,
    random_state: int,
    use_gpu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """implicit ALS on a (users x items) matrix of weighted counts: (user factors, item factors),
    float32, C-contiguous, on the CPU."""
    import implicit.als
    from threadpoolctl import threadpool_limits

    # implicit's own advice: BLAS threads inside its threads slow ALS down many times over
    # (it checks, and warns, when the model is built).
    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=1.0,  # already applied by `confidence`
            iterations=iterations,
            num_threads=num_threads,
            random_state=random_state,
            use_gpu=use_gpu,
        )
        model.fit(confidence(user_items, weighting, alpha), show_progress=False)
    if use_gpu:
        model = model.to_cpu()
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )
