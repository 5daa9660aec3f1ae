"""`Bundler`: the set scorer + the composer on top of a trained retriever.

    bundler = Bundler.fit(retriever, events=dataset.events, bundles=dataset.bundles)
    save_bundler("build/demo/model", bundler)            # component "set_scorer" of the artifact
    bundler = Bundler.load("build/demo/model", retriever)
    bundler.compose(user_id="U0042", items=["I00017"], size=(2, 4), budget=150, n=3)
    bundler.rank_bundles(user_id="U0042", k=5)           # curated bundles for a user

Artifact files (all under `set_scorer/`): weights.safetensors (the net), cooc.safetensors
(co-occurrence statistics), item_ids.json (their row order), config.json (configs + training
report), bundles.parquet (curated bundles, when trained with a bundles file), item_model.json and
item_booster_{anchor,user}.{txt,json} (the bundle item model and its LightGBM trees, when fitted
on baskets). No pickle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, open_artifact
from recs.bundling.composer import BundleConstraints, ComposedBundle, ItemTable, compose
from recs.bundling.config import BundlerConfig
from recs.bundling.cooc import CoocStats
from recs.bundling.item_model import (
    ABSENT_RANK,
    ItemBooster,
    ItemMode,
    ItemModel,
    booster_name,
    item_features,
    price_ranks,
    user_price_tier_gap,
)
from recs.bundling.sets import collect_sets, leaf_ids
from recs.configmodel import UnknownUserPolicy
from recs.data import category as category_rule
from recs.errors import ArtifactError, ConfigError, UnknownItemError
from recs.retrieval.candidates import COOC_HISTORY_ITEMS
from recs.retrieval.rowscores import SparseScores

if TYPE_CHECKING:
    from recs.protocols import SetScorer
    from recs.retrieval.candidates import CandidateSet
    from recs.retrieval.retriever import Retriever, UserContext

__all__ = ["Bundle", "BundleItem", "Bundler", "Bundles", "RankedBundle", "save_bundler"]

COMPONENT = "set_scorer"
FOLDER = "set_scorer"
# 2: the prior is fitted and fixed (buffers prior_weight, prior_bias) and the learned residual
# gated (residual_gate); 1: a trainable prior inside the pair term, no gate (still read).
BUNDLER_FORMAT = 2
READABLE_FORMATS: tuple[int, ...] = (1, 2)
ITEM_MODEL_FILE = f"{FOLDER}/item_model.json"


@dataclass
class BundleItem:
    item_id: str
    title: str
    price: float | None
    category: str
    role: str  # "anchor" | "added"
    reason: str


@dataclass
class Bundle:
    rank: int
    items: list[BundleItem]
    total_price: float | None  # None when an item has no price
    score: float  # the composer's objective: set logit + weight * user relevance
    set_score: float  # probability that the set is a real bundle/basket (not a corrupted one)
    user_preference: float | None = None  # probability that this user buys it (None: no user)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]


class Bundles(list):
    """A list of Bundle; `reason` says why it is empty (no bundle satisfies the constraints)."""

    reason: str | None = None


@dataclass
class RankedBundle:
    rank: int
    bundle_id: str
    title: str
    score: float  # probability that this user buys this bundle (set quality without a user)
    item_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    total_price: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UserRanking:
    rows: np.ndarray  # the user's first candidates, best first (empty: no user)
    scores: np.ndarray | None  # relevance per catalog row (None: no user)
    found: CandidateSet | None  # the retriever's candidates with their features


@dataclass
class ComposeRequest:
    anchors: list[int]
    ctx: UserContext | None
    user_vector: np.ndarray | None
    scorer_user: np.ndarray | None
    has_history: bool
    user: UserRanking
    completion: np.ndarray | None  # set logits of the anchors (or the user's first item) + each row
    sources: dict[int, set[str]]  # candidate row -> the sources that proposed it
    # co-purchase counts with the user's recent distinct purchases, summed (CoocStats.summed)
    history_cooc: SparseScores = field(default_factory=lambda: SparseScores(np.zeros(0, np.int64), np.zeros(0)))

    @property
    def mode(self) -> ItemMode:
        return "anchor" if self.anchors else "user"


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class Bundler:
    def __init__(
        self,
        retriever: Retriever,
        scorer: SetScorer,
        config: BundlerConfig | None = None,
        bundles: pl.DataFrame | None = None,
        item_model: ItemModel | None = None,
        *,
        fitting_item_model: bool = False,
    ) -> None:
        self.retriever = retriever
        self.scorer = scorer
        self.config = config or BundlerConfig()
        self.bundles = bundles  # curated: bundle_id, item_id, title
        # How likely an item joins the user's basket with the anchors (item_model.py); None:
        # the set logit + the user's relevance alone (a bundles-only training, an older artifact).
        self.item_model = item_model
        self._fitting_item_model = fitting_item_model
        self.table = ItemTable.from_items(retriever.items)
        self.price_ranks = price_ranks(self.table.prices, retriever.category_codes[0])  # within each leaf
        if scorer.n_items != len(self.table):
            raise ArtifactError(f"set scorer covers {scorer.n_items} items, the catalog has {len(self.table)}")

    @property
    def gathers_item_inputs(self) -> bool:
        """Whether requests gather what only the item model reads (the user's summed
        co-purchases): when one is served, and when this bundler's requests are its examples."""
        return self.item_model is not None or self._fitting_item_model

    def rebased(self, retriever: Retriever, new_row_of_old: np.ndarray) -> Bundler:
        """This bundler over `retriever`'s changed catalog: the scorer's vectors and co-occurrence
        follow the rows (new items have none); curated bundles lose removed items."""
        bundles = self.bundles
        if bundles is not None:
            bundles = bundles.filter(pl.col("item_id").is_in(list(retriever.catalog.row_of)))
        return Bundler(retriever, self.scorer.rebased(retriever.item_vectors, new_row_of_old), self.config, bundles,
                       self.item_model)  # the item model reads per-request features: nothing to remap

    # -- training ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        retriever: Retriever,
        events: pl.DataFrame | None = None,
        bundles: pl.DataFrame | None = None,
        config: BundlerConfig | None = None,
        work_dir: Path | None = None,
        show_progress: bool = True,
    ) -> Bundler:
        """Train the set scorer on the baskets of `events` and/or the curated `bundles`
        (either may be None: a bundles file alone, or baskets alone, are enough)."""
        from recs.bundling.item_training import fit_bundle_item_model, holdout_last_baskets
        from recs.bundling.scorer import SetScorer
        from recs.bundling.training import fit_set_scorer

        config = config or BundlerConfig()
        row_of = retriever.catalog.row_of
        known = bundles.filter(pl.col("item_id").is_in(list(row_of))) if bundles is not None and bundles.height else None
        held = None
        if events is not None and events.height and config.item_model.enabled:
            held = holdout_last_baskets(events, retriever.catalog.item_ids, config.item_model.max_baskets, config.train.seed)
        history = events if held is None else held[1]
        sets = collect_sets(row_of, history, bundles, max_history=config.train.history_max_items)
        scorer = fit_set_scorer(
            retriever.item_vectors, leaf_ids(retriever.categories), sets, config.scorer, config.train,
            work_dir=work_dir, show_progress=show_progress,
        )
        if held is None:
            return cls(retriever, scorer, config, known)
        past = cls(retriever.with_events(history), scorer, config, known, fitting_item_model=True)
        item_model = fit_bundle_item_model(past, held[0], config.item_model, config.train.seed, config.compose.item_weight,
                                           show_progress)
        # Served with the co-occurrences of every basket, the held-out ones included.
        every = collect_sets(row_of, events, bundles, max_history=config.train.history_max_items)
        scorer = SetScorer(scorer.net, scorer.item_vectors, CoocStats.from_sets(every.rows, len(row_of)),
                           scorer.history_max_items, scorer.history_half_life, scorer.report)
        return cls(retriever, scorer, config, known, item_model)

    @property
    def report(self) -> dict[str, Any]:
        return self.scorer.report

    # -- persistence ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | Artifact, retriever: Retriever) -> Bundler:
        """The set scorer component of an artifact (a path, or an already opened Artifact)."""
        from recs.bundling.scorer import SetScorer, SetScorerNet, upgrade_state
        from recs.retrieval.checkpoint import load_model_state

        artifact = path if isinstance(path, Artifact) else open_artifact(path)
        path = artifact.path
        component = artifact.component(COMPONENT)
        meta = artifact.read_json(f"{FOLDER}/config.json")
        fmt = meta.get("format")
        if fmt not in READABLE_FORMATS:
            raise ArtifactError(f"{path}: set scorer format {fmt!r}, this recs reads {', '.join(map(str, READABLE_FORMATS))}")
        config = BundlerConfig.parse_dict(meta["config"], source=f"{path}/{FOLDER}/config.json")
        dim = int(meta["item_dim"])
        if retriever.item_vectors.shape[1] != dim:
            raise ArtifactError(f"{path}: set scorer reads {dim}-d item vectors, the catalog has {retriever.item_vectors.shape[1]}-d")
        net = SetScorerNet(dim, config.scorer)
        load_model_state(net, upgrade_state(artifact.read_safetensors(f"{FOLDER}/weights.safetensors", framework="pt"), fmt))
        saved_ids = artifact.read_json(f"{FOLDER}/item_ids.json")
        cooc = CoocStats.from_arrays(artifact.read_safetensors(f"{FOLDER}/cooc.safetensors"), len(saved_ids))
        row_of = retriever.catalog.row_of
        if saved_ids != retriever.catalog.item_ids:
            # The catalog changed since training (e.g. `build-index --items`): carry the statistics
            # over by item id; new items have none and are scored from their vectors alone.
            mapping = np.array([row_of.get(i, -1) for i in saved_ids], dtype=np.int64)
            cooc = cooc.remap(mapping, len(row_of))
        bundles = None
        if f"{FOLDER}/bundles.parquet" in component.files:
            bundles = artifact.read_parquet(f"{FOLDER}/bundles.parquet")
        scorer = SetScorer(
            net, retriever.item_vectors, cooc, config.train.history_max_items, config.train.history_half_life,
            meta.get("report") or {},
        )
        return cls(retriever, scorer, config, bundles, read_item_model(artifact, component.files))

    def write(self, writer: ArtifactWriter) -> None:
        """Add the component to an open ArtifactWriter (replacing an older one)."""
        from recs.bundling.scorer import SetScorer as TorchSetScorer
        from recs.retrieval.checkpoint import model_state

        if not isinstance(self.scorer, TorchSetScorer):
            raise ArtifactError("an exported ONNX folder is read-only: retrain the set scorer on the torch artifact")
        if COMPONENT in writer.components:
            writer.remove_component(COMPONENT)
        files = [f"{FOLDER}/weights.safetensors", f"{FOLDER}/cooc.safetensors", f"{FOLDER}/item_ids.json", f"{FOLDER}/config.json"]
        writer.write_safetensors(files[0], model_state(self.scorer.net))
        writer.write_safetensors(files[1], self.scorer.cooc.arrays())
        writer.write_json(files[2], self.retriever.catalog.item_ids)
        report = json.loads(json.dumps(self.report, default=float))
        writer.write_json(files[3], {
            "format": BUNDLER_FORMAT, "item_dim": int(self.scorer.item_vectors.shape[1]),
            "config": self.config.model_dump(mode="json"), "report": report,
        })
        if self.bundles is not None and self.bundles.height:
            self.bundles.write_parquet(writer.file(f"{FOLDER}/bundles.parquet"))
            files.append(f"{FOLDER}/bundles.parquet")
        if self.item_model is not None:
            writer.write_json(ITEM_MODEL_FILE, self.item_model.to_json())
            files.append(ITEM_MODEL_FILE)
            files += write_item_boosters(writer, self.item_model)
        writer.add_component(COMPONENT, "set_scorer", files=files, config={
            "format": BUNDLER_FORMAT, "sets": report.get("sets", {}), "best_epoch": report.get("best_epoch"),
            "valid_auc": report.get("best_metric"),
        })

    # -- users ---------------------------------------------------------------------------------

    def _context(
        self, user_id: str | None, history: list[str] | None, text: str | None, policy: UnknownUserPolicy
    ) -> tuple[UserContext | None, np.ndarray | None]:
        """(context, user-tower vector) or (None, None) when nothing is known of the user."""
        if user_id is None and not history and not text:
            return None, None
        ctx = self.retriever.context(user_id=user_id, history=history, text=text, policy=policy)
        if not ctx.known or not (ctx.state.text or ctx.state.history_rows):
            return ctx, None
        return ctx, self.retriever.user_vectors([ctx.state])[0]

    def _scorer_user(self, ctx: UserContext | None) -> tuple[np.ndarray | None, bool]:
        if ctx is None or not len(ctx.history.rows):
            return None, False
        users, has = self.scorer.user_vectors([ctx.history.rows.tolist()])
        return users[0], bool(has[0])

    # -- scoring -------------------------------------------------------------------------------

    def _rows(self, item_ids: Sequence[str]) -> list[int]:
        unknown = [i for i in item_ids if i not in self.table.row_of]
        if unknown:
            raise UnknownItemError(f"unknown item id(s): {', '.join(unknown[:5])}")
        return [self.table.row_of[i] for i in item_ids]

    def score(self, item_ids: Sequence[str], user_id: str | None = None) -> dict[str, float | None]:
        """{"set_score": P(real set), "user_preference": P(this user buys it) or None}."""
        rows = self._rows(list(dict.fromkeys(item_ids)))
        ctx = self.retriever.context(user_id=user_id, policy="fallback") if user_id else None
        user, has = self._scorer_user(ctx)
        users = None if user is None else user[None, :]
        logits, pref = self.scorer.score([rows], users, None if user is None else np.array([has]))
        return {"set_score": _sigmoid(float(logits[0])), "user_preference": _sigmoid(float(pref[0])) if has else None}

    # -- composing -----------------------------------------------------------------------------

    def compose(
        self,
        user_id: str | None = None,
        *,
        items: Sequence[str] = (),
        size: tuple[int, int] = (2, 4),
        budget: float | None = None,
        n: int = 3,
        in_stock: bool = True,
        exclude: Sequence[str] = (),
        allow_same_leaf: Sequence[str] = (),
        history: list[str] | None = None,
        text: str | None = None,
        unknown_user: UnknownUserPolicy = "fallback",
        relevance_weight: float | None = None,
        beam_width: int | None = None,
        max_shared: int | None = None,
    ) -> Bundles:
        """Up to `n` distinct bundles for a user and/or around anchor `items`, each satisfying
        every constraint (size range, budget, stock, one item per leaf category unless in
        `allow_same_leaf` ("*": any), anchors in, `exclude` out), no two sharing more than
        `max_shared` non-anchor items (default: `[bundling.compose] max_shared_items`, 1).
        The objective is the set logit + `relevance_weight` x the mean log-odds of the added items
        (the item model; default: the weight its fit chose for this mode, else `item_weight`), or x
        the mean user relevance of the members
        without an item model (default `relevance_weight`). Empty with `.reason` when none is
        feasible."""
        cfg = self.config.compose
        anchors = list(dict.fromkeys(items))
        anchor_rows = self._rows(anchors)
        if user_id is None and not history and not text and not anchors:
            raise ConfigError("give a user (or a history/text) or at least one anchor item")
        constraints = BundleConstraints(
            min_size=int(size[0]), max_size=int(size[1]), budget=budget, in_stock_only=in_stock,
            allow_same_leaf=frozenset(allow_same_leaf), anchors=tuple(anchors), exclude=frozenset(exclude),
        )
        req = self.request(user_id, history, text, unknown_user, anchor_rows, in_stock, exclude)
        ctx, scorer_user, has_history, sources = req.ctx, req.scorer_user, req.has_history, req.sources
        candidates = sorted(sources)

        relevance, relevance_of = None, "members"
        weight = cfg.relevance_weight if relevance_weight is None else relevance_weight
        if self.item_model is not None and candidates:
            # Mean log-odds of the added items (the item model) + the set logit / item_weight,
            # over the item model's best candidates.
            rows = np.asarray(candidates, np.int64)
            log_odds = self.item_model.log_odds(self.item_features(req, rows), req.mode)
            relevance = np.zeros(len(self.table))
            relevance[rows] = log_odds
            keep = np.lexsort((rows, -log_odds))[: cfg.n_item_candidates]
            candidates = sorted(rows[keep].tolist())
            chosen = self.item_model.item_weights.get(req.mode, cfg.item_weight)
            relevance_of, weight = "added", chosen if relevance_weight is None else relevance_weight
        elif req.user.scores is not None and candidates:
            scores = req.user.scores
            if cfg.user_relevance == "two_tower":
                pool = np.asarray(candidates + anchor_rows)
                mean, std = float(scores[pool].mean()), float(scores[pool].std())
                relevance = (scores - mean) / (std if std > 1e-9 else 1.0)  # z-scores: comparable to set logits
            else:
                relevance = scores  # -log(1 + rank): a log-probability, in the set logit's units

        users = None if scorer_user is None else scorer_user[None, :]

        def score_sets(sets: list[tuple[int, ...]]) -> np.ndarray:
            u = None if users is None else np.repeat(users, len(sets), axis=0)
            return self.scorer.score(sets, u, None if u is None else np.full(len(sets), has_history))[0]

        result = compose(
            self.table, candidates, constraints, score_sets, relevance, weight if relevance is not None else 0.0,
            n=n, beam_width=beam_width or cfg.beam_width, max_overlap=cfg.max_overlap,
            max_shared=cfg.max_shared_items if max_shared is None else max_shared, relevance_of=relevance_of,
        )
        out = Bundles()
        out.reason = result.reason
        prefs = None
        if result.bundles and scorer_user is not None and has_history:
            u = np.repeat(users, len(result.bundles), axis=0)
            prefs = self.scorer.score([b.rows for b in result.bundles], u, np.ones(len(u), bool))[1]
        for rank, composed in enumerate(result.bundles, start=1):
            out.append(self._bundle(rank, composed, set(anchor_rows), sources, ctx, None if prefs is None else float(prefs[rank - 1])))
        return out

    def request(
        self, user_id: str | None, history: list[str] | None, text: str | None, policy: UnknownUserPolicy,
        anchor_rows: list[int], in_stock: bool, exclude: Sequence[str],
    ) -> ComposeRequest:
        """The user, the candidates and the anchors' completion of one compose request."""
        ctx, user_vector = self._context(user_id, history, text, policy)
        scorer_user, has_history = self._scorer_user(ctx)
        user = self._user_ranking(ctx, user_vector, in_stock, exclude)
        seeds = anchor_rows or (user.rows if len(user.rows) else self.retriever.stats.popular_rows)[:3].tolist()
        completion = self.scorer.complete([np.asarray(anchor_rows or seeds[:1], np.int64)], user=scorer_user)[0] if seeds else None
        # Read by the item model only (a feature, and a user bundle's candidates).
        history_cooc = self._history_cooc(ctx if self.gathers_item_inputs else None)
        sources = self._candidates(anchor_rows, seeds, user.rows, exclude, completion, in_stock, history_cooc)
        return ComposeRequest(list(anchor_rows), ctx, user_vector, scorer_user, has_history, user, completion, sources, history_cooc)

    def _history_cooc(self, ctx: UserContext | None) -> SparseScores:
        """Co-purchase counts with the user's `COOC_HISTORY_ITEMS` most recent distinct purchases
        (the retriever's co-purchase source reads as many), summed."""
        if ctx is None or not ctx.known or not len(ctx.history.rows):
            return self.scorer.cooc.summed([])
        return self.scorer.cooc.summed(ctx.history.recent_distinct(COOC_HISTORY_ITEMS))

    def item_features(self, req: ComposeRequest, rows: np.ndarray) -> np.ndarray:
        """The item model's features of candidate `rows` for one request (item_model.py)."""
        from recs.ranking.features import user_signals
        from recs.retrieval.rowscores import lookup

        r = self.retriever
        history_cooc = affinity = tier_gap = None
        if req.ctx is not None and req.ctx.known:
            history_cooc = req.history_cooc.at(rows)
            signals = user_signals(r, req.ctx)
            leaf_codes, top_codes = r.category_codes
            has_category = leaf_codes[rows] >= 0
            affinity = (np.where(has_category, lookup(signals.leaf, leaf_codes[rows]), 0.0),
                        np.where(has_category, lookup(signals.top, top_codes[rows]), 0.0))
            tier_gap = user_price_tier_gap(self.price_ranks, req.ctx.history.rows, rows)
        return item_features(
            rows, req.anchors, completion=req.completion if req.anchors else None, cooc=self.scorer.cooc,
            item_vectors=r.item_vectors, user_scores=req.user.scores, user_vector=req.user_vector, found=req.user.found,
            popularity=r.stats.popularity, rebuy_rate=r.stats.rebuy_rate, history_cooc=history_cooc, affinity=affinity,
            price_tier_gap=tier_gap, trending=r.stats.trending, days_since_first_sold=r.stats.days_since_first_sold(rows),
        )

    def _user_ranking(
        self, ctx: UserContext | None, user_vector: np.ndarray | None, in_stock: bool, exclude: Sequence[str]
    ) -> UserRanking:
        """What the user most likely buys next. `user_relevance = "candidates"`: the retriever's
        candidates from every source (the user's own purchases first, then two-tower,
        co-purchase, TIFU-KNN, ALS by reciprocal-rank fusion), scored -log(1 + rank);
        "two_tower": the two-tower's nearest items, scored by the two-tower."""
        from recs.retrieval.filters import Filters

        cfg = self.config.compose
        r = self.retriever
        if ctx is None or not ctx.known or user_vector is None:
            return UserRanking(np.zeros(0, np.int64), None, None)
        filters = Filters(in_stock_only=in_stock, exclude=tuple(exclude))
        if cfg.user_relevance == "two_tower" and self.item_model is None:
            rows, _ = r.search(user_vector, cfg.n_user_candidates, filters, ctx.history) if cfg.n_user_candidates else (np.zeros(0, np.int64), None)
            return UserRanking(rows, r.item_vectors @ user_vector, None)
        found = r.candidates(ctx, user_vector, filters)
        rows = found.item_rows[found.order()]
        scores = np.full(len(self.table), -np.log1p(max(ABSENT_RANK, len(rows))), np.float64)
        scores[rows] = -np.log1p(np.arange(len(rows)))
        # With an item model every candidate is a bundle candidate: the model ranks them all.
        return UserRanking(rows if self.item_model is not None else rows[: cfg.n_user_candidates], scores, found)

    def _candidates(
        self,
        anchors: list[int],
        seeds: list[int],
        user_rows: np.ndarray,
        exclude: Sequence[str],
        completion: np.ndarray | None,
        in_stock: bool,
        history_cooc: SparseScores | None = None,
    ) -> dict[int, set[str]]:
        """Candidate rows -> the sources that proposed them ("user", "copurchase", "complement");
        `seeds`: the anchors, or the user's first candidates; `history_cooc`: co-purchase counts
        with the user's purchases, whose best items are candidates without anchors."""
        cfg = self.config.compose
        r = self.retriever
        out: dict[int, set[str]] = {}
        excluded = set(exclude)

        def add(rows: Sequence[int], source: str) -> None:
            for row in rows:
                if row >= 0 and self.table.item_ids[int(row)] not in excluded:
                    out.setdefault(int(row), set()).add(source)

        if len(user_rows):
            add(user_rows.tolist(), "user")
        elif not anchors:
            add(r.stats.popular_rows[: cfg.n_user_candidates].tolist(), "popular")
        for seed in seeds:
            add(r.stats.neighbour_rows[seed][: cfg.n_neighbours].tolist(), "copurchase")
        if not anchors and history_cooc is not None and cfg.n_history_cooc:
            if in_stock:
                stocked = self.table.in_stock[history_cooc.rows]
                history_cooc = SparseScores(history_cooc.rows[stocked], history_cooc.values[stocked])
            add(history_cooc.top(cfg.n_history_cooc).tolist(), "copurchase")
        if completion is not None and cfg.n_complements:
            # The set scorer's own best completions of the anchors: complements even where the
            # shop has no co-purchase data yet (new items, a bundles-only training set).
            scores = np.where(self.table.in_stock, completion, -np.inf) if in_stock else completion
            k = min(cfg.n_complements, int(np.isfinite(scores).sum()))
            if k:
                top = np.argpartition(-scores, k - 1)[:k]
                add(sorted(top.tolist(), key=lambda j: (-scores[j], j)), "complement")
        return out

    def _bundle(
        self,
        rank: int,
        composed: ComposedBundle,
        anchors: set[int],
        sources: dict[int, set[str]],
        ctx: UserContext | None,
        preference: float | None,
    ) -> Bundle:
        t = self.table
        rows = list(composed.rows)
        items = [
            BundleItem(
                item_id=t.item_ids[row], title=t.titles[row], price=t.price(row), category=t.leaves[row],
                role="anchor" if row in anchors else "added", reason=self._reason(row, rows, anchors, sources.get(row, set()), ctx),
            )
            for row in rows
        ]
        prices = [i.price for i in items]
        total = None if any(p is None for p in prices) else float(sum(p for p in prices if p is not None))
        return Bundle(
            rank=rank, items=items, total_price=total, score=composed.objective,
            set_score=_sigmoid(composed.set_logit), user_preference=None if preference is None else _sigmoid(preference),
        )

    def _reason(self, row: int, rows: list[int], anchors: set[int], sources: set[str], ctx: UserContext | None) -> str:
        t = self.table
        if row in anchors:
            return "anchor"
        cooc = self.scorer.cooc
        # The member (anchors first) it was most often bought with.
        partners = sorted(anchors) + [r for r in rows if r != row and r not in anchors]
        counts = cooc.pair_counts(np.full(len(partners), row), np.asarray(partners, np.int64)) if partners else np.zeros(0)
        if len(counts) and counts.max() > 0:
            return f"often bought with {t.titles[partners[int(np.argmax(counts))]]}"
        if "copurchase" in sources and anchors:
            return f"often bought with {t.titles[min(anchors)]}"
        if ctx is not None and row in set(ctx.history.rows.tolist()):
            return "you bought it before"
        if "user" in sources and ctx is not None and len(ctx.history.rows):
            history = np.unique(ctx.history.rows)
            sims = self.retriever.item_vectors[history] @ self.retriever.item_vectors[row]
            return f"because you bought {t.titles[int(history[int(np.argmax(sims))])]}"
        if "user" in sources:
            return "recommended for you"
        leaf = category_rule.leaf(t.leaves[row])
        return f"completes the set: {leaf}" if leaf else "completes the set"

    # -- curated bundles for a user ------------------------------------------------------------

    def rank_bundles(
        self,
        user_id: str | None = None,
        k: int = 10,
        *,
        history: list[str] | None = None,
        exclude_bought: bool = True,
    ) -> list[RankedBundle]:
        """The curated bundles (from training) ranked for a user by the preference head: the
        probability that this user buys the bundle, from its items' vectors and the user vector
        (the user's earlier purchases). Without a user or history: by set score."""
        if self.bundles is None or not self.bundles.height:
            return []
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        grouped = self.bundles.group_by("bundle_id", maintain_order=True).agg(pl.col("item_id"), pl.col("title").first())
        ids = grouped["bundle_id"].to_list()
        members = [self._rows([i for i in items if i in self.table.row_of]) for items in grouped["item_id"].to_list()]
        titles = [t or "" for t in grouped["title"].to_list()]
        keep = [j for j, m in enumerate(members) if m]
        ctx = self.retriever.context(user_id=user_id, history=history, policy="fallback") if (user_id or history) else None
        user, has = self._scorer_user(ctx)
        sets = [members[j] for j in keep]
        if user is not None and has:
            logits = self.scorer.score(sets, np.repeat(user[None, :], len(sets), axis=0), np.ones(len(sets), bool))[1]
        else:
            logits = self.scorer.score(sets)[0]
        bought = set(ctx.history.rows.tolist()) if ctx is not None else set()
        order = sorted(range(len(keep)), key=lambda j: (-float(logits[j]), ids[keep[j]]))
        out: list[RankedBundle] = []
        for j in order:
            rows = sets[j]
            if exclude_bought and bought and set(rows) <= bought:
                continue
            prices = [self.table.price(r) for r in rows]
            out.append(RankedBundle(
                rank=len(out) + 1, bundle_id=str(ids[keep[j]]), title=titles[keep[j]], score=_sigmoid(float(logits[j])),
                item_ids=[self.table.item_ids[r] for r in rows], titles=[self.table.titles[r] for r in rows],
                total_price=None if any(p is None for p in prices) else float(sum(p for p in prices if p is not None)),
            ))
            if len(out) >= k:
                break
        return out


def write_item_boosters(writer: ArtifactWriter, model: ItemModel) -> list[str]:
    """The item model's trees as LightGBM text beside its JSON; the files written."""
    from recs.ranking.ranker import LearnedRanker

    files: list[str] = []
    for mode, booster in sorted(model.boosters.items()):
        if not isinstance(booster, LearnedRanker):
            raise ArtifactError("an exported ONNX folder is read-only: retrain the bundler on the torch artifact")
        files += [f"{FOLDER}/{name}" for name in booster.save(writer.path / FOLDER, booster_name(mode))]
    return files


def read_item_model(
    artifact: Artifact, files: Sequence[str], load_booster: Callable[[str], ItemBooster] | None = None
) -> ItemModel | None:
    """The bundle item model of an artifact's set scorer component (None: it has none), its trees
    read by `load_booster(mode)` (default: LightGBM, from the text files beside the JSON)."""
    if ITEM_MODEL_FILE not in files:
        return None

    def lightgbm(mode: str) -> ItemBooster:
        from recs.ranking.ranker import LearnedRanker

        return LearnedRanker.load(artifact.path / FOLDER, booster_name(mode))

    return ItemModel.from_json(artifact.read_json(ITEM_MODEL_FILE), source=f"{artifact.path}/{ITEM_MODEL_FILE}",
                               load_booster=load_booster or lightgbm)


def save_bundler(path: str | Path, bundler: Bundler) -> Path:
    """Add (or replace) the set scorer component of an existing artifact, atomically."""
    path = Path(path)
    with ArtifactWriter(path, base=path) as writer:
        bundler.write(writer)
    return path
