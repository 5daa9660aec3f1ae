"""The interface every recommender under evaluation implements, and what they all share.

A subclass implements four hooks:
- `_fit(events, items)`: learn from the prepared events (see `Recommender.fit`);
- `_score(users)`: a (len(users), n_items) float array over the catalog, higher is better;
  `-inf` means "no opinion" (the item is ranked after every scored item, in popularity order);
- `_get_state()` / `_set_state(arrays)`: the fitted numpy arrays, saved in the npz.

The base class owns the rest, so every model behaves the same: the catalog and user indices, the
popularity fallback, the unknown-user policy, `exclude_bought`, top-k with deterministic ties
(score, then popularity, then item id), finite float32 scores, and the save/load format. A model
whose state is not its arrays (one wrapping a trained artifact) sets `not_saveable`: `save`
refuses it, and `load` refuses a folder that claims to hold one, both with ArtifactError.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.data.baskets import assign_baskets
from recs.data.schema import EVENT_KINDS, EVENT_WEIGHT
from recs.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    NotFittedError,
    UnknownUserError,
)
from recs.io import atomic_replace_dir, restore_dir

__all__ = [
    "FORMAT_VERSION",
    "RecommendationLists",
    "Recommender",
    "UnknownUserPolicy",
    "prepare_events",
    "registered_recommenders",
    "top_k",
]

UnknownUserPolicy = Literal["raise", "warn", "fallback"]
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
ARRAYS_FILE = "arrays.npz"
# Rows scored at once: bounds the dense (users x catalog) score block to ~32 MB of float64.
_SCORE_BLOCK = 1 << 22

_REGISTRY: dict[str, type[Recommender]] = {}


def registered_recommenders() -> dict[str, type[Recommender]]:
    """Every Recommender subclass with a `name`, by name: the only classes `load` will build.
    Importing `recs.evaluation` (which any import of this module does first) registers them all:
    the baselines and the adapters of the engine's stages (`recs.evaluation.adapters`)."""
    return dict(_REGISTRY)


@dataclass
class RecommendationLists:
    """One entry per requested user, in request order. `scores[u]` is float32, finite, descending,
    and as long as `item_ids[u]`."""

    user_ids: list[str]
    item_ids: list[list[str]]
    scores: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)

    def to_frame(self) -> pl.DataFrame:
        """Long format: user_id, rank (1-based), item_id, score."""
        return pl.DataFrame(
            {
                "user_id": [
                    u for u, items in zip(self.user_ids, self.item_ids, strict=True) for _ in items
                ],
                "rank": [r + 1 for items in self.item_ids for r in range(len(items))],
                "item_id": [i for items in self.item_ids for i in items],
                "score": np.concatenate(self.scores).astype(np.float32)
                if self.scores
                else np.zeros(0, dtype=np.float32),
            },
            schema={"user_id": pl.Utf8, "rank": pl.Int64, "item_id": pl.Utf8, "score": pl.Float32},
        )


# ---------------------------------------------------------------------------------------------
# Frames


def prepare_events(events: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Check and normalise the frames a model is fitted on.

    Returns (events, items). `items` keeps its row order (this is the catalog order). `events` is
    restricted to catalog items and non-null users, gets `event` (default "purchase") and
    `basket_id` (via assign_baskets) when missing, and the helper columns `_t` (int64 microseconds)
    and `_w` (EVENT_WEIGHT of the event kind); sorted by (user_id, _t, item_id).
    """
    if not isinstance(events, pl.DataFrame) or not isinstance(items, pl.DataFrame):
        raise DataError("events and items must be polars DataFrames")
    if "item_id" not in items.columns:
        raise DataError("items: missing column 'item_id'")
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in events.columns]
    if missing:
        raise DataError(f"events: missing column(s) {', '.join(missing)}")
    items = items.with_columns(pl.col("item_id").cast(pl.Utf8))
    if items["item_id"].null_count():
        raise DataError("items: null item_id")
    if items["item_id"].n_unique() != items.height:
        dup = items.filter(pl.col("item_id").is_duplicated())["item_id"][0]
        raise DataError(f"items: duplicate item_id {dup!r}")

    events = events.with_columns(pl.col("user_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8))
    if "event" not in events.columns:
        events = events.with_columns(pl.lit("purchase", dtype=pl.Utf8).alias("event"))
    events = events.with_columns(pl.col("event").cast(pl.Utf8).fill_null("purchase"))
    bad = events.filter(~pl.col("event").is_in(list(EVENT_KINDS)))
    if bad.height:
        raise DataError(
            f"events: unknown event kind {bad['event'][0]!r} (expected one of {', '.join(EVENT_KINDS)})"
        )
    ts = events.schema["timestamp"]
    if ts.is_numeric():  # epoch seconds: made a canonical UTC datetime (baskets need one)
        micros = (pl.col("timestamp").cast(pl.Float64) * 1_000_000).cast(pl.Int64)
        events = events.with_columns(
            pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC").alias("timestamp")
        )
    elif not isinstance(ts, pl.Datetime):
        raise DataError(f"events: timestamp must be a datetime or epoch seconds, got {ts}")
    t = pl.col("timestamp").dt.epoch("us")
    if "basket_id" not in events.columns:
        if "order_id" not in events.columns:
            events = events.with_columns(pl.lit(None, dtype=pl.Utf8).alias("order_id"))
        events = assign_baskets(events)
    events = (
        events.filter(
            pl.col("user_id").is_not_null()
            & pl.col("timestamp").is_not_null()
            & pl.col("item_id").is_in(items["item_id"].implode())
        )
        .with_columns(
            t.alias("_t"),
            pl.col("event").replace_strict(EVENT_WEIGHT, return_dtype=pl.Float64).alias("_w"),
        )
        .sort(["user_id", "_t", "item_id"])
    )
    return events, items


def _as_str_array(values: Sequence[str]) -> np.ndarray:
    # Fixed-width unicode, not object: npz then loads with allow_pickle=False.
    return np.asarray(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")


# ---------------------------------------------------------------------------------------------
# Ranking


def top_k(scores: np.ndarray, k: int, tie_order: np.ndarray) -> list[np.ndarray]:
    """Column indices of the k best entries of each row of `scores`.

    Descending score; equal scores (including `-inf`, "no opinion") follow `tie_order`, a
    permutation of the columns (the popularity order). NaN marks a removed entry, never returned,
    so a row yields min(k, #non-NaN) indices: no padding, no duplicates.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError("scores must be 2-d")
    # Columns permuted into tie order: a stable sort on the score then settles ties by it.
    neg = -scores[:, tie_order]
    out: list[np.ndarray] = []
    for row in neg:
        valid = int(np.count_nonzero(~np.isnan(row)))
        kk = min(k, valid)
        if kk == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        # The kk-th smallest of -score (NaN sorts last), then every entry up to it, ties included.
        threshold = np.partition(row, kk - 1)[kk - 1]
        if threshold == np.inf:
            # The list reaches the "no opinion" items: sort only the scored ones; the rest are
            # already in tie order, no need to sort a whole catalog of ties.
            scored = np.flatnonzero(row < np.inf)
            scored = scored[np.argsort(row[scored], kind="stable")]
            cand = np.concatenate([scored, np.flatnonzero(row == np.inf)[: kk - scored.size]])
        else:
            cand = np.flatnonzero(row <= threshold)
            cand = cand[np.argsort(row[cand], kind="stable")][:kk]
        out.append(tie_order[cand])
    return out


def _finite_scores(values: np.ndarray) -> np.ndarray:
    """float32 copy with -inf ("no opinion") shown as the lowest real score (or 0), so the list
    stays finite and descending."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    floor = min(0.0, float(values[finite].min())) if finite.any() else 0.0
    values = np.where(finite, values, floor)
    big = float(np.finfo(np.float32).max)
    return np.clip(values, -big, big).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The interface


class Recommender(ABC):
    """Base class of every recommender the evaluation harness runs.

    Subclasses set `name` (a stable snake_case method name; also the key `load` dispatches on) and
    list their constructor hyper-parameters in `param_names` (saved in the JSON config).
    """

    name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]] = ()
    # Why this model cannot be saved, or None when `save` / `load` round-trip it exactly. A model
    # that wraps a trained artifact (towers, index, rankers) sets it: its npz alone cannot rebuild
    # it, so `save` refuses, and so does `load` of a folder that claims to hold one.
    not_saveable: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def __init__(self, unknown_user: UnknownUserPolicy = "fallback") -> None:
        if unknown_user not in get_args(UnknownUserPolicy):
            raise ConfigError(
                f"unknown_user must be one of {', '.join(get_args(UnknownUserPolicy))}, got {unknown_user!r}"
            )
        self.unknown_user: UnknownUserPolicy = unknown_user
        self._fitted = False

    # -- hyper-parameters ---------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """Constructor hyper-parameters (JSON-able), without `unknown_user`."""
        return {p: getattr(self, p) for p in self.param_names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def item_ids(self) -> list[str]:
        """The catalog, in the order of the `items` frame given to `fit`."""
        self._check_fitted()
        return self._item_ids.tolist()

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> Self:
        """Learn from canonical events (all kinds) over the catalog `items`. Returns self."""
        events, items = prepare_events(events, items)
        self._index(
            item_ids=items["item_id"].to_list(),
            user_ids=sorted(events["user_id"].unique().to_list()),
        )
        events = events.join(self._user_frame(), on="user_id").join(
            self._item_frame(), on="item_id"
        )
        events = events.sort(["user_id", "_t", "item_id"])
        purchases = events.filter(pl.col("event") == "purchase")
        self._bought = self._matrix(purchases.unique(["_u", "_i"]), values=None)
        if purchases.height:
            counts = self._times_bought(purchases).group_by("_i").agg(pl.col("n").sum())
        else:
            # A log with no purchases at all: weighted engagement is the best popularity left.
            counts = events.group_by("_i").agg(pl.col("_w").sum().alias("n"))
        pop = np.zeros(len(self._item_ids), dtype=np.float64)
        pop[counts["_i"].to_numpy()] = counts["n"].to_numpy()
        self._set_popularity(pop)
        self._fit(events, items)
        self._fitted = True
        return self

    def _index(self, item_ids: list[str], user_ids: list[str]) -> None:
        self._item_ids = _as_str_array(item_ids)
        self._user_ids = _as_str_array(user_ids)
        self._item_index = {item: i for i, item in enumerate(item_ids)}
        self._user_index = {user: u for u, user in enumerate(user_ids)}

    def _set_popularity(self, counts: np.ndarray) -> None:
        self._pop_counts = np.asarray(counts, dtype=np.float64)
        # Popularity order: most bought first, ties by item id (lexsort: last key is primary).
        self._pop_order = np.lexsort((self._item_ids, -self._pop_counts)).astype(np.int64)

    def _user_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "user_id": self._user_ids.tolist(),
                "_u": np.arange(len(self._user_ids), dtype=np.int32),
            },
            schema={"user_id": pl.Utf8, "_u": pl.Int32},
        )

    def _item_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "item_id": self._item_ids.tolist(),
                "_i": np.arange(len(self._item_ids), dtype=np.int32),
            },
            schema={"item_id": pl.Utf8, "_i": pl.Int32},
        )

    @staticmethod
    def _times_bought(purchases: pl.DataFrame) -> pl.DataFrame:
        """(_u, _i, n, last_t): in how many distinct baskets each user bought each item (a row
        without basket counts alone), and when last."""
        key = pl.coalesce(
            pl.col("basket_id"),
            pl.concat_str([pl.lit("row:"), pl.int_range(pl.len()).cast(pl.Utf8)]),
        )
        return (
            purchases.with_columns(key.alias("_b"))
            .group_by(["_u", "_i"])
            .agg(
                pl.col("_b").n_unique().alias("n").cast(pl.Float64),
                pl.col("_t").max().alias("last_t"),
            )
            .sort(["_u", "_i"])
        )

    def _matrix(self, frame: pl.DataFrame, values: str | None) -> sp.csr_matrix:
        """(n_users x n_items) CSR from a frame with `_u`/`_i` columns (duplicates summed);
        `values` names the data column, None for ones."""
        data = (
            np.ones(frame.height, dtype=np.float64)
            if values is None
            else frame[values].to_numpy().astype(np.float64)
        )
        m = sp.csr_matrix(
            (data, (frame["_u"].to_numpy(), frame["_i"].to_numpy())),
            shape=(len(self._user_ids), len(self._item_ids)),
        )
        m.sum_duplicates()
        m.sort_indices()
        return m

    # -- recommending -------------------------------------------------------------------------

    def recommend(
        self, user_ids: Sequence[str], k: int = 10, exclude_bought: bool = False
    ) -> RecommendationLists:
        """Top-k catalog items for each user, in request order.

        Users absent from the fitted events follow `unknown_user`: "raise" (UnknownUserError),
        "warn" (a warning, then popularity) or "fallback" (popularity). `exclude_bought` drops
        items the user purchased in the fitted events. Lists are shorter than k only when the
        catalog (minus exclusions) is.
        """
        self._check_fitted()
        if isinstance(user_ids, str):
            raise ConfigError("user_ids must be a sequence of user ids, not one string")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        users = [str(u) for u in user_ids]
        idx = np.array([self._user_index.get(u, -1) for u in users], dtype=np.int64)
        unknown = np.flatnonzero(idx < 0)
        if unknown.size:
            shown = ", ".join(repr(users[i]) for i in unknown[:5])
            more = f" and {unknown.size - 5} more" if unknown.size > 5 else ""
            if self.unknown_user == "raise":
                raise UnknownUserError(f"{self.name}: unknown user(s) {shown}{more}")
            if self.unknown_user == "warn":
                warnings.warn(
                    f"{self.name}: {unknown.size} unknown user(s) ({shown}{more}) served by popularity",
                    UserWarning,
                    stacklevel=2,
                )

        item_lists: list[list[str]] = [[] for _ in users]
        score_lists: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in users]
        if unknown.size:
            top = self._pop_order[:k]
            pop_items = self._item_ids[top].tolist()
            pop_scores = _finite_scores(self._pop_counts[top])
            for i in unknown:
                item_lists[i] = list(pop_items)
                score_lists[i] = pop_scores.copy()
        for rows in self._blocks(np.flatnonzero(idx >= 0)):
            block = np.asarray(self._score(idx[rows]), dtype=np.float64)
            if block.shape != (rows.size, len(self._item_ids)):
                raise RuntimeError(f"{self.name}._score returned shape {block.shape}")
            # A NaN from a model is "no opinion", not a removal; +inf is just "very high".
            block = np.where(np.isnan(block), -np.inf, np.minimum(block, np.finfo(np.float64).max))
            if exclude_bought:
                sub = self._bought[idx[rows]].tocoo()
                block[sub.row, sub.col] = np.nan
            for j, chosen in enumerate(top_k(block, k, self._pop_order)):
                item_lists[rows[j]] = self._item_ids[chosen].tolist()
                score_lists[rows[j]] = _finite_scores(block[j, chosen])
        return RecommendationLists(user_ids=users, item_ids=item_lists, scores=score_lists)

    def _blocks(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        size = max(1, _SCORE_BLOCK // max(1, len(self._item_ids)))
        for start in range(0, rows.size, size):
            yield rows[start : start + size]

    # -- subclass hooks -----------------------------------------------------------------------

    @abstractmethod
    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        """Learn from prepared events: the `prepare_events` columns plus `_u` / `_i` (int32 user
        and catalog indices); `items` is the catalog in index order."""

    @abstractmethod
    def _score(self, users: np.ndarray) -> np.ndarray:
        """Scores (len(users), n_items) for known user indices; -inf = no opinion."""

    def _get_state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook
        pass

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Save to the folder `path` (config.json + arrays.npz, no pickle), atomically.
        ArtifactError for a model that cannot be saved (`not_saveable`)."""
        if self.not_saveable:
            raise ArtifactError(f"{self.name} {self.not_saveable}")
        self._check_fitted()
        config = {
            "format_version": FORMAT_VERSION,
            "class": self.name,
            "params": self.get_params(),
            "unknown_user": self.unknown_user,
        }
        arrays = {
            "item_ids": self._item_ids,
            "user_ids": self._user_ids,
            "pop_counts": self._pop_counts,
            "bought_indptr": self._bought.indptr.astype(np.int64),
            "bought_indices": self._bought.indices.astype(np.int64),
        }
        for key, value in self._get_state().items():
            arrays[f"model__{key}"] = np.asarray(value)
        for key, value in arrays.items():
            if value.dtype == object:
                raise RuntimeError(
                    f"{self.name}: array {key!r} has dtype object (would need pickle)"
                )

        def fill(tmp: Path) -> None:
            (tmp / CONFIG_FILE).write_text(
                json.dumps(config, indent=2, sort_keys=True), encoding="utf-8"
            )
            with open(tmp / ARRAYS_FILE, "wb") as f:
                np.savez(f, **arrays)

        return atomic_replace_dir(Path(path), fill)

    @classmethod
    def load(cls, path: Path) -> Recommender:
        """Load a folder written by `save`. On the base class, the class is chosen by the config's
        name among registered recommenders; on a subclass, the name must match it."""
        path = Path(path)
        restore_dir(path, complete=lambda backup: (backup / ARRAYS_FILE).is_file())  # after a crashed save
        try:
            config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ArtifactError(f"{path}: no {CONFIG_FILE}") from e
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{path / CONFIG_FILE}: unreadable ({e})") from e
        if not isinstance(config, dict):
            raise ArtifactError(f"{path / CONFIG_FILE}: not a JSON object")
        version = config.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ArtifactError(
                f"{path}: unsupported format_version {version!r} (this recs reads <= {FORMAT_VERSION})"
            )
        name = config.get("class")
        target = _REGISTRY.get(name) if isinstance(name, str) else None
        if target is None:
            raise ArtifactError(f"{path}: unknown recommender class {name!r}")
        if cls is not Recommender and not issubclass(target, cls):
            raise ArtifactError(f"{path}: holds a {name!r} model, not {cls.name!r}")
        if target.not_saveable:
            raise ArtifactError(f"{path}: a {name!r} model cannot be loaded from a folder: {name} {target.not_saveable}")
        params = config.get("params", {})
        policy = config.get("unknown_user", "fallback")
        if not isinstance(params, dict) or set(params) - set(target.param_names):
            raise ArtifactError(f"{path}: bad params for {name!r}: {params!r}")
        try:
            model = target(**params, unknown_user=policy)
        except (TypeError, ValueError, ConfigError) as e:
            raise ArtifactError(f"{path}: cannot build {name!r} from its config ({e})") from e
        try:
            with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except FileNotFoundError as e:
            raise ArtifactError(f"{path}: no {ARRAYS_FILE}") from e
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{path / ARRAYS_FILE}: unreadable ({e})") from e
        try:
            model._restore(arrays)
        except (KeyError, ValueError, IndexError) as e:
            raise ArtifactError(f"{path}: arrays do not match the model ({e})") from e
        return model

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        item_ids = arrays["item_ids"].astype(str).tolist()
        user_ids = arrays["user_ids"].astype(str).tolist()
        self._index(item_ids, user_ids)
        pop = arrays["pop_counts"].astype(np.float64)
        if pop.shape != (len(item_ids),):
            raise ValueError("pop_counts does not match item_ids")
        self._set_popularity(pop)
        indices = arrays["bought_indices"]
        self._bought = sp.csr_matrix(
            (np.ones(indices.size, dtype=np.float32), indices, arrays["bought_indptr"]),
            shape=(len(user_ids), len(item_ids)),
        )
        self._set_state(
            {k[len("model__") :]: v for k, v in arrays.items() if k.startswith("model__")}
        )
        self._fitted = True
