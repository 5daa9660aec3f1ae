"""Helpers shared by the baselines: sparse state in npz, a user's recent items, basket order."""

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


def purchase_baskets(events: pl.DataFrame) -> pl.DataFrame:
    """Distinct (_u, _i, seq, age) of every purchase: `seq` numbers each user's baskets from 0 (the
    oldest) and `age` from 0 (the most recent), ordered by the basket's last `_t`, then its id.

    A numbered order, not the time itself: two baskets closed at the same instant stay two baskets.
    A purchase without a basket id is a basket of its own."""
    purchases = events.filter(pl.col("event") == "purchase")
    key = pl.coalesce(
        pl.col("basket_id").cast(pl.Utf8),
        pl.concat_str([pl.lit("row:"), pl.int_range(pl.len()).cast(pl.Utf8)]),
    )
    lines = purchases.with_columns(key.alias("_b")).select("_u", "_i", "_b", "_t")
    baskets = (
        lines.group_by(["_u", "_b"])
        .agg(pl.col("_t").max())
        .sort(["_u", "_t", "_b"])
        .with_columns(pl.int_range(pl.len()).over("_u").alias("seq"))
        .with_columns((pl.col("seq").max().over("_u") - pl.col("seq")).alias("age"))
    )
    return (
        lines.select("_u", "_i", "_b")
        .unique()
        .join(baskets.select("_u", "_b", "seq", "age"), on=["_u", "_b"])
        .select("_u", "_i", "seq", "age")
        .sort(["_u", "seq", "_i"])
    )
