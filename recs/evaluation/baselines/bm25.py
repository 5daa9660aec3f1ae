"""BM25 text match: the user's history rendered as text is the query, item text the document.

The index is built by `bm25s` (its Lucene-style BM25 term x document weights); scoring is one
sparse product, so a whole batch of users is scored at once and the query can weigh each history
item by recency and event kind.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.evaluation.baselines._common import csr_from_state, csr_state, recent_items
from recs.evaluation.recommender import Recommender, UnknownUserPolicy

DOC_FIELDS: tuple[str, ...] = ("title", "category", "brand", "description")
QUERY_FIELDS: tuple[str, ...] = ("title", "category")


def item_text(items: pl.DataFrame, fields: tuple[str, ...]) -> list[str]:
    """One string per item: the present, non-null `fields` joined by " | "."""
    present = [f for f in fields if f in items.columns]
    if not present:
        return [""] * items.height
    return items.select(
        pl.concat_str(
            [pl.col(f).cast(pl.Utf8) for f in present], separator=" | ", ignore_nulls=True
        )
        .fill_null("")
        .alias("text")
    )["text"].to_list()


def _tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class BM25Recommender(Recommender):
    """Documents: title + category + brand + description. Query of a user: the title + category
    of their last `max_history` distinct items (all event kinds), most recent first; each item's
    terms weigh EVENT_WEIGHT of its strongest event x 0.5 ** (position / half_life).
    Items with no matching term are filled by popularity."""

    name = "bm25"
    param_names = ("k1", "b", "half_life", "max_history")

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        half_life: float = 5.0,
        max_history: int = 20,
        unknown_user: UnknownUserPolicy = "fallback",
    ) -> None:
        super().__init__(unknown_user=unknown_user)
        self.k1 = float(k1)
        self.b = float(b)
        self.half_life = float(half_life)
        self.max_history = int(max_history)

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        import bm25s

        n_items = len(self._item_ids)
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        retriever.index(_tokenize(item_text(items, DOC_FIELDS)), show_progress=False)
        s = retriever.scores
        n_terms = len(s["indptr"]) - 1
        # bm25s stores its precomputed weights as a term x document CSR.
        self._weights = sp.csr_matrix(
            (np.asarray(s["data"], dtype=np.float64), s["indices"], s["indptr"]),
            shape=(n_terms, n_items),
        )
        vocab = retriever.vocab_dict

        # Query terms of each item (title + category), as an item x term count matrix.
        rows: list[int] = []
        cols: list[int] = []
        for i, tokens in enumerate(_tokenize(item_text(items, QUERY_FIELDS))):
            for tok in tokens:
                t = vocab.get(tok, -1)
                if 0 <= t < n_terms:
                    rows.append(i)
                    cols.append(t)
        item_terms = sp.csr_matrix(
            (
                np.ones(len(rows)),
                (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
            ),
            shape=(n_items, n_terms),
        )
        recent = recent_items(events, self.max_history, self.half_life)
        self._queries = (self._matrix(recent, "weight") @ item_terms).tocsr()
        self._queries.sort_indices()

    def _score(self, users: np.ndarray) -> np.ndarray:
        scores = np.asarray((self._queries[users] @ self._weights).todense(), dtype=np.float64)
        scores[scores <= 0] = -np.inf
        return scores

    def _get_state(self) -> dict[str, np.ndarray]:
        return {**csr_state(self._weights, "weights"), **csr_state(self._queries, "queries")}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        n_terms = arrays["weights_indptr"].size - 1
        self._weights = csr_from_state(arrays, "weights", (n_terms, len(self._item_ids)))
        self._queries = csr_from_state(arrays, "queries", (len(self._user_ids), n_terms))
