"""`Engine`: the one object an application talks to (retrieve -> order -> top k).

    engine = recs.Engine.load("build/demo/model")
    engine.recommend(user_id="U0007", k=10)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recs.config import UnknownUserPolicy
from recs.errors import ConfigError
from recs.retrieval.candidates import SOURCES
from recs.retrieval.retriever import Filters, Retriever


@dataclass
class RecommendedItem:
    rank: int
    item_id: str
    title: str
    price: float | None
    score: float
    source: str  # the sources that found it, e.g. "two_tower+history"
    features: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Engine:
    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    @classmethod
    def load(cls, path: str | Path) -> Engine:
        return cls(Retriever.load(path))

    def save(self, path: str | Path) -> Path:
        return self.retriever.save(path)

    def recommend(
        self,
        user_id: str | None = None,
        k: int = 10,
        *,
        history: list[str] | None = None,
        text: str | None = None,
        category: str | None = None,
        in_stock: bool = False,
        exclude_bought: bool = False,
        exclude: list[str] | None = None,
        unknown_user: UnknownUserPolicy | None = None,
    ) -> list[RecommendedItem]:
        """Top-k items for a known user, or for someone described by `history` (item ids) and/or
        `text` (a session or a search query). Unknown users follow `unknown_user`."""
        return self.recommend_batch(
            [user_id], k, histories=[history], texts=[text], category=category, in_stock=in_stock,
            exclude_bought=exclude_bought, exclude=exclude, unknown_user=unknown_user,
        )[0]

    def recommend_batch(
        self,
        user_ids: list[str | None],
        k: int = 10,
        *,
        histories: list[list[str] | None] | None = None,
        texts: list[str | None] | None = None,
        category: str | None = None,
        in_stock: bool = False,
        exclude_bought: bool = False,
        exclude: list[str] | None = None,
        unknown_user: UnknownUserPolicy | None = None,
    ) -> list[list[RecommendedItem]]:
        if isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        n = len(user_ids)
        histories = histories or [None] * n
        texts = texts or [None] * n
        r = self.retriever
        contexts = [
            r.context(user_id=u, history=h, text=t, policy=unknown_user)
            for u, h, t in zip(user_ids, histories, texts, strict=True)
        ]
        vectors = r.user_vectors([c.state for c in contexts])
        filters = Filters(category=category, in_stock_only=in_stock, exclude_bought=exclude_bought, exclude=tuple(exclude or ()))
        out: list[list[RecommendedItem]] = []
        for context, vector in zip(contexts, vectors, strict=True):
            cands = r.candidates(context, vector if context.known else None, filters)
            order = cands.order()[:k]
            out.append([self._item(rank, cands, j) for rank, j in enumerate(order, start=1)])
        return out

    def _item(self, rank: int, cands: Any, j: int) -> RecommendedItem:
        r = self.retriever
        row = int(cands.item_rows[j])
        price = r.items["price"][row] if "price" in r.items.columns else None
        features = {name: float(values[j]) for name, values in cands.features.items()}
        sources = [s for s in SOURCES if features.get(f"from_{s}", 0.0) > 0]
        return RecommendedItem(
            rank=rank,
            item_id=r.catalog.item_ids[row],
            title=r.catalog.titles[row],
            price=None if price is None or not np.isfinite(price) else float(price),
            score=float(cands.merged_score[j]),
            source="+".join(sources) or "popularity",
            features=features,
        )
