"""Helpers shared by the baselines: sparse state in npz, a user's recent items."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp


def csr_state(m: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    """A CSR matrix as three plain arrays (npz-safe, no pickle)."""
    return {
        f"{prefix}_data": m.data.astype(np.float64),
        f"{prefix}_indices": m.indices.astype(np.int64),
        f"{prefix}_indptr": m.indptr.astype(np.int64),
    }


def csr_from_state(
    arrays: dict[str, np.ndarray], prefix: str, shape: tuple[int, int]
) -> sp.csr_matrix:
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


def recent_items(events: pl.DataFrame, max_history: int, half_life: float) -> pl.DataFrame:
    """Each user's last `max_history` distinct items: (_u, _i, last_t, w, pos, weight).

    pos 0 = most recently touched; w = EVENT_WEIGHT of the strongest event on the item;
    weight = w * 0.5 ** (pos / half_life), so an item `half_life` steps back counts half."""
    return (
        events.group_by(["_u", "_i"])
        .agg(pl.col("_t").max().alias("last_t"), pl.col("_w").max().alias("w"))
        .sort(["_u", "last_t", "_i"], descending=[False, True, False])
        .with_columns(pl.int_range(pl.len()).over("_u").alias("pos"))
        .filter(pl.col("pos") < max_history)
        .with_columns((pl.col("w") * 0.5 ** (pl.col("pos") / max(half_life, 1e-9))).alias("weight"))
    )
