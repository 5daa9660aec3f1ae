"""Temporal item frequencies and their user-kNN (TIFU-KNN; Hu, He, Gao & Zhang, "Modeling
Personalized Item Frequency Information for Next-basket Recommendation", SIGIR 2020).

A user is the vector of their decayed purchase frequencies: baskets (multi-hot, one entry per
distinct item) are grouped `group_size` at a time from the most recent one backwards; inside a group
a basket `p` places back weighs `within_decay ** p`, and the group `g` places back weighs
`group_decay ** g`; each group is averaged over its baskets and the groups over their number.
The prediction blends the user's own vector with the mean vector of their `neighbours` most similar
users (cosine): `alpha * own + (1 - alpha) * neighbours`.

Plain functions on numpy / scipy arrays: the `tifu_knn` evaluation baseline and the engine's
candidate source and ranking features (`statistics.py`) share them, so both follow one rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recs.configmodel import StrictModel
from recs.retrieval.rowmap import RowMap
from recs.retrieval.rowscores import SparseScores

__all__ = ["FILES", "TifuConfig", "TifuModel", "knn_mean", "normalise_rows", "tifu_vectors"]

FILES: dict[str, str] = {
    "user_ids": "tifu_users.npy",
    "data": "tifu_data.npy",
    "indices": "tifu_indices.npy",
    "indptr": "tifu_indptr.npy",
}
_BLOCK = 512  # query users per dense similarity block: 512 x n_users float32


class TifuConfig(StrictModel):
    """Defaults from the paper's grocery settings, checked on the shops in `../shared`."""

    group_size: int = Field(default=7, ge=1)
    within_decay: float = Field(default=0.9, gt=0, le=1)
    group_decay: float = Field(default=0.7, gt=0, le=1)
    neighbours: int = Field(default=300, ge=1)
    alpha: float = Field(default=0.7, ge=0, le=1)


def tifu_vectors(
    user_rows: np.ndarray, item_rows: np.ndarray, basket_keys: np.ndarray, n_users: int, n_items: int,
    group_size: int, within_decay: float, group_decay: float,
) -> sp.csr_matrix:
    """(n_users x n_items) float32 CSR of decayed frequencies, from purchase lines (one user row,
    item row and basket key each; a larger basket key is a later basket, e.g. its time). Plain
    numpy: it also builds one user's vector per request, where a data frame would cost more."""
    if len(user_rows) == 0:
        return sp.csr_matrix((n_users, n_items), dtype=np.float32)
    u = np.asarray(user_rows, np.int64)
    i = np.asarray(item_rows, np.int64)
    b = np.asarray(basket_keys)
    order = np.lexsort((i, b, u))
    u, i, b = u[order], i[order], b[order]
    # One entry per (user, basket, item): an item twice in a basket counts once (multi-hot).
    keep = np.ones(len(u), dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (b[1:] != b[:-1]) | (i[1:] != i[:-1])
    u, i, b = u[keep], i[keep], b[keep]
    new_basket = np.ones(len(u), dtype=bool)
    new_basket[1:] = (u[1:] != u[:-1]) | (b[1:] != b[:-1])
    basket_of_line = np.cumsum(new_basket) - 1
    basket_user = u[new_basket]
    first_of_user = np.ones(len(basket_user), dtype=bool)
    first_of_user[1:] = basket_user[1:] != basket_user[:-1]
    user_start = np.flatnonzero(first_of_user)
    counts = np.diff(np.append(user_start, len(basket_user)))
    n_baskets = np.repeat(counts, counts)
    position = np.arange(len(basket_user)) - np.repeat(user_start, counts)
    age = n_baskets - 1 - position  # 0 = the user's most recent basket
    m = int(group_size)
    group, place = age // m, age % m
    n_groups = (n_baskets - 1) // m + 1
    # The oldest group holds what is left after the full groups nearer the present.
    size = np.minimum(m, n_baskets - group * m)
    weight = np.power(float(group_decay), group) * np.power(float(within_decay), place) / (size * n_groups)
    matrix = sp.csr_matrix(
        (weight[basket_of_line].astype(np.float32), (u, i)), shape=(n_users, n_items)
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def normalise_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty)."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ matrix)


def knn_mean(
    queries: sp.csr_matrix, stored: sp.csr_matrix, stored_unit: sp.csr_matrix, k: int,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """(n_queries x n_items) float32: the mean stored vector of each query's k most cosine-similar
    stored users (`stored_unit` = normalise_rows(stored)); `exclude[j]` is a stored row query j may
    not pick (itself), -1 for none. Users with no similar user (similarity 0) are not picked."""
    n_stored = stored.shape[0]
    out = np.zeros((queries.shape[0], stored.shape[1]), dtype=np.float32)
    if n_stored == 0 or queries.shape[0] == 0:
        return out
    query_unit = normalise_rows(queries)
    for start in range(0, queries.shape[0], _BLOCK):
        block = slice(start, min(start + _BLOCK, queries.shape[0]))
        sims = (query_unit[block] @ stored_unit.T).toarray().astype(np.float32)
        if exclude is not None:
            rows = np.arange(sims.shape[0])
            own = exclude[block]
            mine = own >= 0
            sims[rows[mine], own[mine]] = -1.0
        kk = min(int(k), n_stored)
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = (top_sims > 0).astype(np.float32) / np.float32(kk)
        picker = sp.csr_matrix(
            (weights.ravel(), top.ravel(), np.arange(0, top.size + 1, kk)), shape=(sims.shape[0], n_stored)
        )
        out[block] = (picker @ stored).toarray()
    return out


@dataclass
class TifuModel:
    """Every known user's TIFU vector (catalog columns) and the config they were built with."""

    user_ids: np.ndarray  # (n_users,) str
    vectors: sp.csr_matrix  # (n_users, n_items) float32
    config: TifuConfig

    def __post_init__(self) -> None:
        self._row_of = {u: i for i, u in enumerate(self.user_ids.tolist())}
        self._unit = normalise_rows(self.vectors)
        self._unit_by_item: sp.csr_matrix | None = None  # items x users: a request reads its items' buyers

    @classmethod
    def fit(cls, purchases: pl.DataFrame, row_of: dict[str, int], n_items: int, config: TifuConfig) -> TifuModel:
        """From purchase events (user_id, item_id, timestamp; catalog items only)."""
        user_ids = np.array(sorted(set(purchases["user_id"].cast(pl.Utf8).to_list())), dtype=str)
        user_row = {u: i for i, u in enumerate(user_ids.tolist())}
        vectors = tifu_vectors(
            np.array([user_row[u] for u in purchases["user_id"].cast(pl.Utf8).to_list()], dtype=np.int64),
            np.array([row_of[i] for i in purchases["item_id"].to_list()], dtype=np.int64),
            purchases["timestamp"].dt.epoch("us").to_numpy(),
            len(user_ids), n_items, config.group_size, config.within_decay, config.group_decay,
        )
        return cls(user_ids, vectors, config)

    def user_vector(self, rows: np.ndarray, times: np.ndarray) -> sp.csr_matrix:
        """(1 x n_items) vector of one purchase history (catalog rows, times; a basket = one time)."""
        c = self.config
        return tifu_vectors(np.zeros(len(rows), np.int64), rows, times, 1, self.vectors.shape[1],
                            c.group_size, c.within_decay, c.group_decay)

    def scores(self, user_id: str | None, rows: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(own, neighbours): two float32 arrays over the catalog for one user's purchase history.
        A known user is never their own neighbour."""
        own = self.user_vector(rows, times)
        exclude = np.array([self._row_of.get(user_id, -1) if user_id is not None else -1], dtype=np.int64)
        neighbours = knn_mean(own, self.vectors, self._unit, self.config.neighbours, exclude)[0]
        return own.toarray()[0].astype(np.float32), neighbours

    def sparse_scores(self, user_id: str | None, rows: np.ndarray, times: np.ndarray) -> tuple[SparseScores, SparseScores]:
        """`scores` for serving: the same two vectors kept sparse, and the neighbours found among
        the users who share an item with this one (the others have similarity 0 and are never
        picked), so a request costs what those users bought, not users x items. Only which of
        several users tied at the k-th similarity is picked may differ from `knn_mean`."""
        own = self.user_vector(rows, times)
        own_scores = SparseScores(own.indices.astype(np.int64), own.data)
        n_stored = self.vectors.shape[0]
        if n_stored == 0 or own.nnz == 0:
            return own_scores, SparseScores(np.zeros(0, np.int64), np.zeros(0, np.float32))
        if self._unit_by_item is None:
            self._unit_by_item = sp.csr_matrix(self._unit.T)
        sims = (normalise_rows(own) @ self._unit_by_item).tocsr()
        users, values = sims.indices.astype(np.int64), sims.data.astype(np.float32)
        me = self._row_of.get(user_id, -1) if user_id is not None else -1
        keep = (values > 0) & (users != me)
        users, values = users[keep], values[keep]
        kk = min(int(self.config.neighbours), n_stored)
        if len(users) > kk:
            users = users[np.argpartition(-values, kk - 1)[:kk]]
        picked = self.vectors[np.sort(users)]
        items, where = np.unique(picked.indices, return_inverse=True)
        sums = np.bincount(where, weights=picked.data, minlength=len(items)) / kk
        return own_scores, SparseScores(items.astype(np.int64), sums.astype(np.float32))

    def rebased(self, rows: RowMap) -> TifuModel:
        """Over a changed catalog: removed items' columns leave every user's vector, new items
        get empty columns until the next fit."""
        coo = self.vectors.tocoo()
        cols = rows.rows(coo.col)
        keep = cols >= 0
        vectors = sp.csr_matrix((coo.data[keep], (coo.row[keep], cols[keep])), shape=(self.vectors.shape[0], len(rows)))
        vectors.sort_indices()
        out = TifuModel(self.user_ids, vectors.astype(np.float32), self.config)
        out._row_of = dict(self._row_of)  # forgotten users stay forgotten
        return out

    def forget(self, user_id: str) -> None:
        """The user is nobody's neighbour and has no stored vector from now on (their entries are
        zeroed: similarity 0 is never picked; `recs refresh` drops the row)."""
        row = self._row_of.pop(user_id, None)
        if row is None:
            return
        for matrix in (self.vectors, self._unit):
            matrix.data[matrix.indptr[row]:matrix.indptr[row + 1]] = 0.0
        if self._unit_by_item is not None:
            self._unit_by_item.data[self._unit_by_item.indices == row] = 0.0

    def arrays(self) -> dict[str, np.ndarray]:
        """File name -> array, as saved in an artifact."""
        return {FILES["user_ids"]: self.user_ids.astype(str), FILES["data"]: self.vectors.data.astype(np.float32),
                FILES["indices"]: self.vectors.indices.astype(np.int64), FILES["indptr"]: self.vectors.indptr.astype(np.int64)}

    @classmethod
    def from_files(cls, read: Callable[[str], np.ndarray], n_items: int, config: TifuConfig) -> TifuModel:
        user_ids = read(FILES["user_ids"])
        vectors = sp.csr_matrix((read(FILES["data"]), read(FILES["indices"]), read(FILES["indptr"])),
                                shape=(len(user_ids), n_items))
        return cls(user_ids, vectors, config)
