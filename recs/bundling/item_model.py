"""The bundle item model: how likely an item joins this basket, given the user and the anchors.

Per mode ("anchor": with anchor items, "user": for the user alone), LightGBM trees (binary, raw
score = log-odds; `[bundling.item_model] model = "boosted"`, the default) and a logistic
regression (always fitted: the report's readable weights, and the model where trees are off or
were not fitted) over features of each candidate item:
- the anchors' side: the set scorer's completion of the anchors as a log-probability over the
  catalog, the co-purchase count and the mean vector cosine with the anchors;
- the user's side: the item's place in the retriever's merged candidates (own purchases first,
  then two-tower, co-purchase, TIFU-KNN, ALS), and the retriever's per-candidate signals (times
  bought, recency, share of baskets, TIFU-KNN, co-purchase with the history, two-tower score);
- the user's co-purchases: the item's co-purchase count with the user's recent distinct
  purchases, summed (what a "bought with what you bought" list reads), and the user's
  interaction shares in the item's leaf and top-level category (the ranker's affinities), and
  how far the item's price rank within its leaf is from the user's usual one (budget or premium
  buyer: `price_ranks`);
- the item's popularity and re-buy rate.
`Bundler.fit` fits it on held-out baskets (each sampled user's last of 3+ items, from the history
before it), so its weights are what this shop's baskets reward: how far to trust the user's
habits against the anchor's complements. A bundle's objective is then the mean log-odds of its
added items (plus a small set-logit term for how the added items go together): bundles hold the
items most likely bought with the anchor by this user. numpy + scipy + LightGBM; saved as JSON
and LightGBM text (no pickle), the trees exported to ONNX like the ranker's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from recs.bundling.cooc import CoocStats
from recs.errors import ArtifactError
from recs.retrieval.candidates import NEVER_DAYS

if TYPE_CHECKING:
    from recs.ranking.config import RankerConfig
    from recs.retrieval.candidates import CandidateSet

ItemMode = Literal["anchor", "user"]
MODES: tuple[ItemMode, ...] = ("anchor", "user")
ITEM_FEATURES: tuple[str, ...] = (
    "anchor_logp",
    "anchor_cooc",
    "anchor_cosine",
    "user_logp",
    "times_bought",
    "recent_buys",
    "basket_share",
    "log_days_since_bought",
    "tifu_score",
    "cooc_score",
    "two_tower_score",
    "item_rebuy_rate",
    "popularity",
    "history_cooc",
    "leaf_affinity",
    "top_affinity",
    "price_tier_gap",
    "trending",
    "log_days_since_first_sold",
)
ABSENT_RANK = 1000  # an item outside the user's candidates ranks here (its user_logp)
ITEM_MODEL_FORMAT = 4
# Format 1 had the first 13 features, format 2 the first 17: read as format 4 with zero weights
# on the rest, which scores every item as it did. Format 3 had no trees.
_FORMAT_FEATURES = {1: ITEM_FEATURES[:13], 2: ITEM_FEATURES[:17], 3: ITEM_FEATURES, 4: ITEM_FEATURES}


class ItemBooster(Protocol):
    """A mode's trees: `recs.ranking.ranker.LearnedRanker` (LightGBM), or its ONNX export
    (`recs.serving.onnx_runtime.OnnxRanker`) when serving without LightGBM."""

    feature_names: tuple[str, ...]

    def predict(self, features: np.ndarray) -> np.ndarray: ...


def booster_name(mode: str) -> str:
    """A mode's trees in an artifact: `<set_scorer folder>/<name>.txt` and, exported, `onnx/<name>.onnx`."""
    return f"item_booster_{mode}"


@dataclass
class ItemModel:
    """Features -> log-odds per mode: the mode's trees where it has them, else its logistic
    regression (standardised features, one weight vector (features + bias))."""

    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)
    weights: dict[str, np.ndarray]  # mode -> (F + 1,), the bias last
    report: dict[str, Any] = field(default_factory=dict)
    # mode -> the weight of the mean log-odds against the set logit in the compose objective,
    # chosen on held-out baskets (item_training.select_item_weights); absent: the config's.
    item_weights: dict[str, float] = field(default_factory=dict)
    boosters: dict[str, ItemBooster] = field(default_factory=dict)  # mode -> its trees (saved beside the JSON)

    def log_odds(self, features: np.ndarray, mode: ItemMode) -> np.ndarray:
        booster = self.boosters.get(mode)
        if booster is not None:
            # float32 rows: what the exported trees take, so both runtimes route every row alike.
            scores = np.asarray(booster.predict(np.asarray(features, np.float32)), np.float64).reshape(-1)
            return np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
        w = self.weights[mode]
        z = (np.asarray(features, np.float64) - self.mean) / self.std
        return np.nan_to_num(z @ w[:-1] + w[-1], nan=0.0, posinf=0.0, neginf=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ITEM_MODEL_FORMAT, "features": list(ITEM_FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist(),
            "weights": {m: w.tolist() for m, w in self.weights.items()}, "report": self.report,
            "item_weights": self.item_weights, "boosters": sorted(self.boosters),
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], source: str, load_booster: Callable[[str], ItemBooster] | None = None
    ) -> ItemModel:
        """`load_booster(mode)`: the trees the JSON lists (by `booster_name(mode)`); needed when it lists any."""
        fmt = data.get("format")
        features = _FORMAT_FEATURES.get(fmt) if isinstance(fmt, int) else None
        if features is None or list(data.get("features", [])) != list(features):
            raise ArtifactError(f"{source}: bundle item model format {fmt!r} with other features; retrain the bundler")
        n = len(ITEM_FEATURES)
        mean, std = np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64)
        weights = {m: np.asarray(w, np.float64) for m, w in data["weights"].items()}
        if len(features) < n and mean.shape == std.shape == (len(features),):
            extra = n - len(features)
            mean, std = np.concatenate([mean, np.zeros(extra)]), np.concatenate([std, np.ones(extra)])
            weights = {m: np.concatenate([w[:-1], np.zeros(extra), w[-1:]]) if w.shape == (len(features) + 1,) else w
                       for m, w in weights.items()}
        if mean.shape != (n,) or std.shape != (n,) or set(weights) != set(MODES) or any(w.shape != (n + 1,) for w in weights.values()):
            raise ArtifactError(f"{source}: bundle item model arrays do not match its {n} features")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)
                and all(np.all(np.isfinite(w)) for w in weights.values())):
            raise ArtifactError(f"{source}: bundle item model holds non-finite numbers")
        item_weights = dict(data.get("item_weights") or {})  # absent in files written before the selection
        if set(item_weights) - set(MODES) or not all(
            isinstance(w, int | float) and np.isfinite(w) and w >= 0 for w in item_weights.values()
        ):
            raise ArtifactError(f"{source}: bundle item model item_weights must map {', '.join(MODES)} to finite numbers >= 0")
        modes = data.get("boosters") or []
        if not isinstance(modes, list) or set(modes) - set(MODES):
            raise ArtifactError(f"{source}: bundle item model boosters must list modes of {', '.join(MODES)}")
        boosters: dict[str, ItemBooster] = {}
        for mode in modes:
            if load_booster is None:
                raise ArtifactError(f"{source}: bundle item model has trees for {mode!r}; read it with its artifact")
            booster = load_booster(mode)
            if tuple(booster.feature_names) != ITEM_FEATURES:
                raise ArtifactError(f"{source}: the {mode!r} trees read other features; retrain the bundler")
            boosters[mode] = booster
        return cls(mean, std, weights, dict(data.get("report") or {}), {m: float(w) for m, w in item_weights.items()}, boosters)


def fit_item_model(data: Mapping[ItemMode, tuple[np.ndarray, np.ndarray]], l2: float = 1.0) -> ItemModel:
    """L2-regularised logistic regression per mode on (features (N, F), labels (N,)); features
    standardised with the statistics of all modes together. A mode without both labels gets
    the other mode's weights (or zero weights)."""
    from scipy.optimize import minimize

    every = np.concatenate([x for x, _ in data.values()]) if data else np.zeros((0, len(ITEM_FEATURES)))
    mean = every.mean(axis=0) if len(every) else np.zeros(len(ITEM_FEATURES))
    std = every.std(axis=0) if len(every) else np.ones(len(ITEM_FEATURES))
    std = np.where(std > 1e-9, std, 1.0)
    weights: dict[str, np.ndarray] = {}
    report: dict[str, Any] = {}
    for mode, (x, y) in data.items():
        y = np.asarray(y, np.float64)
        if not len(y) or y.min() == y.max():
            continue
        z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])

        def loss(w: np.ndarray, z: np.ndarray = z, y: np.ndarray = y) -> tuple[float, np.ndarray]:
            s = z @ w
            # log(1 + e^s) - y s, stably; the bias is not regularised.
            value = float(np.sum(np.logaddexp(0.0, s) - y * s)) + 0.5 * l2 * float(w[:-1] @ w[:-1])
            grad = z.T @ (1.0 / (1.0 + np.exp(-s)) - y)
            grad[:-1] += l2 * w[:-1]
            return value, grad

        start = np.zeros(z.shape[1])
        start[-1] = float(np.log(y.mean() / (1.0 - y.mean())))
        result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
        w = np.nan_to_num(result.x, nan=0.0, posinf=0.0, neginf=0.0)
        weights[mode] = w
        report[mode] = {"rows": len(y), "positives": int(y.sum()),
                        "weights": {f: round(float(v), 4) for f, v in zip((*ITEM_FEATURES, "bias"), w, strict=True)}}
    for mode in MODES:
        if mode not in weights:
            other = next(iter(weights.values()), None)
            weights[mode] = other.copy() if other is not None else np.zeros(len(ITEM_FEATURES) + 1)
    return ItemModel(mean, std, weights, report)


def fit_item_boosters(
    data: Mapping[ItemMode, tuple[np.ndarray, np.ndarray, np.ndarray]], config: RankerConfig
) -> tuple[dict[str, ItemBooster], dict[str, Any]]:
    """Per mode with both labels, LightGBM binary trees on (features (N, F), labels (N,), the
    rows of each request in turn (group sizes)): the ranker's trainer, early-stopped on a
    held-out share of the requests. Returns the trees by mode and a report per mode."""
    from recs.ranking.ranker import LearnedRanker

    boosters: dict[str, ItemBooster] = {}
    report: dict[str, Any] = {}
    for mode, (x, y, sizes) in data.items():
        y = np.asarray(y, np.float64)
        if not len(y) or y.min() == y.max():
            continue
        ranker = LearnedRanker(ITEM_FEATURES, config).fit(np.asarray(x, np.float32), y, sizes)
        boosters[mode] = ranker
        report[mode] = {"trees": ranker.best_iteration, **{k: round(v, 4) for k, v in ranker.metrics.items()}}
    return boosters, report


def item_features(
    rows: np.ndarray,
    anchors: Sequence[int],
    *,
    completion: np.ndarray | None,
    cooc: CoocStats,
    item_vectors: np.ndarray,
    user_scores: np.ndarray | None,
    user_vector: np.ndarray | None,
    found: CandidateSet | None,
    popularity: np.ndarray,
    rebuy_rate: np.ndarray | None,
    history_cooc: np.ndarray | None = None,
    affinity: tuple[np.ndarray, np.ndarray] | None = None,
    price_tier_gap: np.ndarray | None = None,
    trending: np.ndarray | None = None,
    days_since_first_sold: np.ndarray | None = None,
) -> np.ndarray:
    """(len(rows), len(ITEM_FEATURES)) float64, finite. `completion`: the set scorer's logits of
    anchors + each catalog row (None: no anchors); `user_scores`: -log(1 + rank) in the user's
    merged candidates per catalog row (None: no user); `found`: those candidates with the
    retriever's per-candidate features; `history_cooc`: per row of `rows`, its co-purchase
    count with the user's recent purchases; `affinity`: per row of `rows`, the user's (leaf,
    top-level) category shares (None: no user); `price_tier_gap`: per row of `rows`,
    `user_price_tier_gap`; `trending`: per catalog row, purchases decayed to the log's end
    (`recs.retrieval.cooccurrence.trending_purchases`); `days_since_first_sold`: per row of
    `rows`, the item's days on sale (`BehaviourStats.days_since_first_sold`; None: NEVER_DAYS)."""
    rows = np.asarray(rows, np.int64)
    out = np.zeros((len(rows), len(ITEM_FEATURES)), np.float64)
    col = {name: j for j, name in enumerate(ITEM_FEATURES)}
    anchors = [int(a) for a in anchors]
    if anchors and completion is not None:
        finite = completion[np.isfinite(completion)]
        norm = float(np.logaddexp.reduce(finite)) if len(finite) else 0.0
        out[:, col["anchor_logp"]] = np.maximum(np.where(np.isfinite(completion[rows]), completion[rows] - norm, -50.0), -50.0)
    if anchors:
        counts = sum(cooc.pair_counts(np.full(len(rows), a), rows) for a in anchors)
        out[:, col["anchor_cooc"]] = np.log1p(counts)
        out[:, col["anchor_cosine"]] = (item_vectors[rows] @ item_vectors[anchors].T).mean(axis=1)
    out[:, col["user_logp"]] = user_scores[rows] if user_scores is not None else -np.log1p(ABSENT_RANK)
    if user_vector is not None:
        out[:, col["two_tower_score"]] = item_vectors[rows] @ user_vector
    out[:, col["log_days_since_bought"]] = np.log1p(NEVER_DAYS)
    if found is not None and len(found):
        position = {int(r): j for j, r in enumerate(found.item_rows.tolist())}
        here = np.array([position.get(int(r), -1) for r in rows], np.int64)
        hit = here >= 0
        for name in ("times_bought", "recent_buys", "basket_share", "tifu_score", "cooc_score"):
            out[hit, col[name]] = found.features[name][here[hit]]
        out[hit, col["log_days_since_bought"]] = np.log1p(found.features["days_since_bought"][here[hit]])
    out[:, col["popularity"]] = np.log1p(np.asarray(popularity, np.float64)[rows])
    if rebuy_rate is not None:
        out[:, col["item_rebuy_rate"]] = np.asarray(rebuy_rate, np.float64)[rows]
    if history_cooc is not None:
        out[:, col["history_cooc"]] = np.log1p(np.maximum(np.asarray(history_cooc, np.float64), 0.0))
    if affinity is not None:
        out[:, col["leaf_affinity"]], out[:, col["top_affinity"]] = affinity
    if price_tier_gap is not None:
        out[:, col["price_tier_gap"]] = price_tier_gap
    if trending is not None:
        out[:, col["trending"]] = np.log1p(np.maximum(np.asarray(trending, np.float64)[rows], 0.0))
    out[:, col["log_days_since_first_sold"]] = np.log1p(
        np.maximum(days_since_first_sold, 0.0) if days_since_first_sold is not None else NEVER_DAYS)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def price_ranks(prices: np.ndarray, leaf_codes: np.ndarray) -> np.ndarray:
    """Each item's price rank within its leaf category, in [0, 1] (0 the cheapest; ties share
    their mean rank; items without a category ranked among themselves); NaN where the price is
    unknown or the leaf has one priced item. One grouped pass (polars), whatever the leaves."""
    import polars as pl

    prices = np.asarray(prices, np.float64)
    frame = pl.DataFrame({"leaf": np.asarray(leaf_codes, np.int64),
                          "price": pl.Series(np.where(np.isinf(prices), np.nan, prices), nan_to_null=True)})
    ranked = frame.select(
        (pl.col("price").rank("average").over("leaf") - 1.0) / (pl.col("price").count().over("leaf") - 1)
    ).to_series()
    out = ranked.cast(pl.Float64).to_numpy()
    return np.where(np.isfinite(out), out, np.nan)


def user_price_tier_gap(ranks: np.ndarray, bought: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """|the item's price rank - the mean price rank of the user's purchases| per row of `rows`
    (0 where the item's rank is unknown); None when no purchase has a rank."""
    mine = ranks[np.asarray(bought, np.int64)]
    mine = mine[np.isfinite(mine)]
    if not len(mine):
        return None
    theirs = ranks[np.asarray(rows, np.int64)]
    return np.where(np.isfinite(theirs), np.abs(theirs - float(mine.mean())), 0.0)
