"""The trained retrieval stage: towers + catalog vectors + FAISS index + what users did.

`Retriever.fit` trains the towers on a behaviour log and indexes the catalog; `save`/`load` go
through an artifact folder (safetensors, npy, parquet, FAISS; no pickle). It answers:
- `user_vectors(states)`: the user tower over history text (+ history item vectors);
- `search(...)`: the two-tower's nearest items, with filters, through the FAISS index;
- `candidates(...)`: every source merged, with per-source features (see candidates.py).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, open_artifact
from recs.configmodel import UnknownUserPolicy
from recs.data import category as cat
from recs.data.requirements import require_items, require_training_pairs
from recs.data.splits import leave_last_out
from recs.data.text import render_item, render_user
from recs.errors import ArtifactError, UnknownItemError, UnknownUserError
from recs.protocols import TowerEncoders, WritableTowers
from recs.retrieval.candidates import CandidateSet, UserHistory, generate_candidates
from recs.retrieval.config import RetrievalConfig
from recs.retrieval.filters import CatalogMasks, Filters
from recs.retrieval.history import history_means
from recs.retrieval.index import ItemIndex
from recs.retrieval.pairs import (
    Catalog,
    TrainingExamples,
    UserState,
    build_examples,
    state_from_events,
)
from recs.retrieval.rowscores import VectorScores
from recs.retrieval.statistics import FILES as STAT_FILES
from recs.retrieval.statistics import BehaviourStats, fit_statistics
from recs.retrieval.userstate import UserStore

if TYPE_CHECKING:
    from recs.retrieval.encode import TorchTowers
    from recs.retrieval.trainer import TrainReport

__all__ = ["Filters", "RetrievalConfig", "Retriever", "UserContext", "item_catalog", "validation_targets"]

_RETRIEVAL_COMPONENTS = ("towers", "catalog", "index", "interactions")
RETRIEVER_FORMAT = 1


@dataclass
class UserContext:
    """Everything the engine knows of one request's user."""

    user_id: str | None
    state: UserState
    history: UserHistory
    known: bool
    # Every interaction (catalog row, event kind, epoch seconds), chronological: ranking features.
    interactions: list[tuple[int, str, float]] = field(default_factory=list)


def item_catalog(items: pl.DataFrame, config: RetrievalConfig) -> Catalog:
    """The catalog rows as the towers read them (`config.item_template`)."""
    return Catalog.from_items(items, lambda f: [render_item(r, config.item_template) for r in f.iter_rows(named=True)])


def _served_events(events: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    return events.select("user_id", "item_id", "timestamp", "event", "basket_id").filter(
        pl.col("item_id").is_in(list(catalog.row_of))
    )


def validation_targets(train_events: pl.DataFrame, targets: pl.DataFrame, config: RetrievalConfig) -> pl.DataFrame:
    """The held-out targets the towers are validated on: what they are trained for (with
    `positives = new_to_user`, only items new to the user)."""
    if config.train.positives != "new_to_user":
        return targets
    bought = train_events.filter(pl.col("event") == "purchase").select("user_id", "item_id").unique()
    return targets.join(bought, on=["user_id", "item_id"], how="anti")


def tuned_candidates(config: RetrievalConfig, events: pl.DataFrame, targets: pl.DataFrame, catalog: Catalog) -> RetrievalConfig:
    """`config` with the engine's ALS settings chosen on the held-out `targets` (when
    `candidates.tune_als`): the config saved with the model records what was chosen."""
    cfg = config.candidates
    if not cfg.tune_als or cfg.als_factors == 0 or events.height == 0 or targets.height == 0:
        return config
    from recs.retrieval.factors import tune_factors

    start = {"factors": cfg.als_factors, "regularization": cfg.als_regularization, "alpha": cfg.als_alpha,
             "weighting": cfg.als_weighting, "iterations": cfg.als_iterations}
    best, _ = tune_factors(events, targets, catalog.row_of, len(catalog), start)
    update = {f"als_{k}": v for k, v in best.items()}
    return config.model_copy(update={"candidates": cfg.model_copy(update=update)})


class Retriever:
    """Composes the encoders (torch or ONNX), the item vectors and their index, the behaviour
    statistics and the log the users' histories come from. Building any of them is `assemble`'s
    job (or `fit`'s); the constructor only holds them."""

    def __init__(
        self,
        towers: TowerEncoders,
        config: RetrievalConfig,
        items: pl.DataFrame,
        events: pl.DataFrame,
        item_vectors: np.ndarray,
        index: ItemIndex,
        stats: BehaviourStats,
        report: TrainReport | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.towers = towers
        self.config = config
        self.items = items
        # `catalog`: already rendered from `items` (an item change re-renders only its rows).
        self.catalog = catalog if catalog is not None and len(catalog) == items.height else item_catalog(items, config)
        self.events = _served_events(events, self.catalog)
        if len(item_vectors) != len(self.catalog) or len(stats.popularity) != len(self.catalog):
            raise ArtifactError(
                f"{len(self.catalog)} items but {len(item_vectors)} item vectors and statistics for {len(stats.popularity)}"
            )
        self.item_vectors = item_vectors
        self.index = index
        self.stats = stats
        self.report = report
        self.categories = items["category"].fill_null("").to_list() if "category" in items.columns else [""] * len(self.catalog)
        self.masks = CatalogMasks(
            self.categories,
            items["price"].cast(pl.Float64).fill_null(float("nan")).to_numpy() if "price" in items.columns else None,
            items["in_stock"].fill_null(True).to_numpy() if "in_stock" in items.columns else None,
            self.catalog.row_of,
        )
        self._index_masks: dict[tuple, np.ndarray] = {}
        self._index_masks_lock = threading.Lock()
        self._users: UserStore | None = None
        # The event store's last sequence numbers this log holds ({"events", "items", "forgets"}:
        # set by `recs refresh`); a service replays what the store has after them.
        self.store_marks: dict[str, int] = {}
        self._category_codes: tuple[np.ndarray, np.ndarray] | None = None
        # Item changes build a successor off to the side (itemchanges.py); events that reach this
        # retriever after it took over this one's users go on to it, under the lock they share.
        self._events_lock = threading.RLock()
        self.successor: Retriever | None = None

    @property
    def category_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(leaf, top) category code per catalog row, -1 for none (see `category.codes`)."""
        if self._category_codes is None:
            self._category_codes = cat.codes(self.categories)
        return self._category_codes

    @property
    def now(self) -> float:
        return self.stats.now

    @property
    def in_stock(self) -> np.ndarray:
        return self.masks.in_stock

    @classmethod
    def assemble(
        cls,
        towers: TowerEncoders,
        config: RetrievalConfig,
        items: pl.DataFrame,
        events: pl.DataFrame,
        item_vectors: np.ndarray | None = None,
        index: ItemIndex | None = None,
        stats: BehaviourStats | None = None,
        report: TrainReport | None = None,
        show_progress: bool = False,
    ) -> Retriever:
        """A Retriever with whatever is not given built: the catalog encoded by the item tower,
        indexed, and the statistics fitted from `events`."""
        catalog = item_catalog(items, config)
        if item_vectors is None:
            item_vectors = towers.encode_items(catalog.texts, show_progress=show_progress)
        if index is None:
            index = ItemIndex(dim=int(item_vectors.shape[1]), kind=config.index_kind)
            index.add(
                catalog.item_ids, item_vectors,
                categories=items["category"].to_list() if "category" in items.columns else None,
                in_stock=items["in_stock"].fill_null(True).to_list() if "in_stock" in items.columns else None,
            )
        if stats is None:
            stats = fit_statistics(_served_events(events, catalog), catalog.row_of, len(catalog), config.candidates)
        return cls(towers, config, items, events, item_vectors, index, stats, report)

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        events: pl.DataFrame,
        items: pl.DataFrame,
        config: RetrievalConfig | None = None,
        work_dir: Path | None = None,
        valid_targets: pl.DataFrame | None = None,
        show_progress: bool = True,
    ) -> Retriever:
        """Train the towers on `events` and index `items`.

        Without `valid_targets`, each user's last basket is held out for validation (early
        stopping) and the towers train on what came before; the served history is all of `events`."""
        from recs.encoders.backbone import load_backbone, load_tokenizer
        from recs.retrieval.encode import TorchTowers
        from recs.retrieval.towers import TwoTowerModel

        config = config or RetrievalConfig()
        require_items(items, "training the towers")
        catalog = item_catalog(items, config)
        train_events = events
        if valid_targets is None:
            split = leave_last_out(events, items["item_id"])
            train_events, valid_targets = split.fit_events, split.test
        new_only = config.train.positives == "new_to_user"
        examples = build_examples(
            train_events, catalog, config.max_history_events, config.user_text_max_chars, new_items_only=new_only,
        )
        # Before the backbone loads: a shop with nothing to learn from is refused, not served untrained.
        require_training_pairs(len(examples), new_only)
        tokenizer = load_tokenizer(config.towers.model)
        towers = TorchTowers(TwoTowerModel(load_backbone(config.towers.model), config.towers), tokenizer)
        valid_targets = validation_targets(train_events, valid_targets, config)
        config = tuned_candidates(config, _served_events(train_events, catalog), valid_targets, catalog)
        return cls.fine_tune(towers, config, items, events, train_events, examples, valid_targets, work_dir, show_progress)

    @classmethod
    def fine_tune(
        cls,
        towers: TorchTowers,
        config: RetrievalConfig,
        items: pl.DataFrame,
        events: pl.DataFrame,
        train_events: pl.DataFrame,
        examples: TrainingExamples,
        valid_targets: pl.DataFrame,
        work_dir: Path | None = None,
        show_progress: bool = True,
    ) -> Retriever:
        """Fine-tune `towers` (in place: fresh ones from `fit`, a trained artifact's when resuming)
        on `examples`, early stopping on `valid_targets` (see `validation_targets`) with the users'
        states from `train_events`; then the catalog is encoded and indexed and the statistics
        fitted on `events`, the log served."""
        from recs.retrieval.encode import TorchTowers
        from recs.retrieval.trainer import make_validation_set, train_towers

        catalog = item_catalog(items, config)
        states = {
            str(user[0]): state_from_events(group, catalog, config.max_history_events, config.user_text_max_chars)
            for user, group in train_events.group_by("user_id")
        }
        valid = make_validation_set(states, valid_targets, catalog, config.train.valid_users, config.train.seed)
        model = towers.model
        work = work_dir or Path(".recs-work")
        report = train_towers(model, towers.tokenizer, catalog, examples, valid, config.train, work, show_progress=show_progress)
        if config.train.lora:
            model.item_backbone = model.item_backbone.merge_and_unload()
            model.user_backbone = model.item_backbone if not config.towers.separate_backbones else model.user_backbone.merge_and_unload()
        return cls.assemble(TorchTowers(model, towers.tokenizer), config, items, events, report=report)

    @classmethod
    def zero_shot(
        cls, events: pl.DataFrame, items: pl.DataFrame, config: RetrievalConfig | None = None,
        item_vectors: np.ndarray | None = None,
    ) -> Retriever:
        """The untuned backbone (identity heads): the zero-shot baseline. `item_vectors`: the
        catalog already encoded by that backbone (e.g. cached), so it is not encoded again."""
        from recs.encoders.backbone import load_backbone, load_tokenizer
        from recs.retrieval.encode import TorchTowers
        from recs.retrieval.towers import TwoTowerModel

        config = config or RetrievalConfig()
        model = TwoTowerModel(load_backbone(config.towers.model), config.towers)
        return cls.assemble(TorchTowers(model, load_tokenizer(config.towers.model)), config, items, events,
                            item_vectors=item_vectors)

    def encode_texts(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Item-tower vectors of item texts."""
        return self.towers.encode_items(texts, show_progress=show_progress)

    def with_events(self, events: pl.DataFrame, items: pl.DataFrame | None = None) -> Retriever:
        """The same encoders serving from `events` (statistics fitted from them); the vectors and
        index are kept when the catalog is unchanged. `items` swaps the catalog (re-encoded)."""
        same = items is None or items["item_id"].to_list() == self.items["item_id"].to_list()
        return type(self).assemble(
            self.towers, self.config, self.items if items is None else items, events,
            item_vectors=self.item_vectors if same else None,
            index=self.index if items is None else None, report=self.report,
        )

    def with_catalog(
        self, items: pl.DataFrame | None = None, kind: str | None = None, show_progress: bool = True,
        item_vectors: np.ndarray | None = None, index: ItemIndex | None = None,
    ) -> Retriever:
        """The catalog (optionally a new one: new items are servable at once) re-encoded and
        re-indexed (as `kind`); statistics refitted when the catalog changed. `item_vectors` and
        `index`: the catalog's, already built elsewhere (`recs build-index --from-shards`)."""
        config = self.config if kind is None else self.config.model_copy(update={"index_kind": kind})
        new_items = self.items if items is None else items
        same = new_items["item_id"].to_list() == self.items["item_id"].to_list()
        return type(self).assemble(
            self.towers, config, new_items, self.events, item_vectors=item_vectors, index=index,
            stats=self.stats if same else None, report=self.report, show_progress=show_progress,
        )

    def torch_towers(self) -> TorchTowers:
        """The torch towers (training, export); an ONNX folder has none."""
        from recs.retrieval.encode import TorchTowers

        if not isinstance(self.towers, TorchTowers):
            raise ArtifactError("this model is an ONNX export: train, export and re-index from the torch artifact")
        return self.towers

    # -- users ----------------------------------------------------------------------------------

    @property
    def users(self) -> UserStore:
        """Every user's events as arrays, built from the log on first use (see userstate.py)."""
        if self._users is None:
            with self._events_lock:  # built once: a second build would drop events added to the first
                if self._users is None:
                    self._users = self._user_store()
        return self._users

    def _user_store(self) -> UserStore:
        return UserStore.from_events(self.events, self.catalog, self.config.max_history_events,
                                     self.config.user_text_max_chars)

    def known_user(self, user_id: str) -> bool:
        return user_id in self.users

    def add_events(self, user_id: str, events: Sequence[tuple[str, str, float]]) -> int:
        """New events of one user, (item id, event kind, epoch seconds) each, served from the next
        request on: history, buy-again features and user vector follow. Items not in the catalog
        are skipped; returns how many were added. The statistics (popularity, ALS, neighbours)
        are refitted by `recs refresh`, not here."""
        with self._events_lock:
            if self.successor is not None:  # an item change replaced this model: it serves now
                return self.successor.add_events(user_id, events)
            kept = [(self.catalog.row_of[i], str(kind), float(when)) for i, kind, when in events if i in self.catalog.row_of]
            if kept:
                rows, kinds, times = zip(*kept, strict=True)
                self.users.add_events(user_id, rows, kinds, times)
                # "days since" features count from the log's end: a newer event moves it.
                self.stats.now = max(self.stats.now, max(times))
            return len(kept)

    def forget_user(self, user_id: str) -> bool:
        """Serve `user_id` as an unknown user from now on: their events leave the log and the user
        state, their ALS and TIFU rows are zeroed. Whether they were known."""
        with self._events_lock:
            if self.successor is not None:  # an item change replaced this model: it serves now
                return self.successor.forget_user(user_id)
            return self._forget_user(user_id)

    def _forget_user(self, user_id: str) -> bool:
        known = user_id in self.users
        self.users.forget(user_id)
        self.stats.forget_user(user_id)
        if self.events.height and (self.events["user_id"] == user_id).any():
            self.events = self.events.filter(pl.col("user_id") != user_id)
            known = True
        return known

    def context(
        self,
        user_id: str | None = None,
        history: list[str] | None = None,
        text: str | None = None,
        policy: UnknownUserPolicy | None = None,
    ) -> UserContext:
        """A user's state from the log, or from an explicit history (item ids) and/or text."""
        policy = policy or self.config.unknown_user
        if history:
            unknown = [i for i in history if i not in self.catalog.row_of]
            if unknown:
                raise UnknownItemError(f"history: unknown item id(s) {', '.join(unknown[:5])}")
            rows = [self.catalog.row_of[i] for i in history]
            entries = [("purchase", self.catalog.titles[r]) for r in rows]
            state = UserState(render_user(entries, self.config.user_text_max_chars, cold_start_text=text or ""), rows)
            hist = UserHistory(np.asarray(rows, dtype=np.int64), np.full(len(rows), self.now))
            return UserContext(user_id, state, hist, known=True, interactions=[(r, "purchase", self.now) for r in rows])
        derived = self.users.derived(user_id) if user_id is not None else None
        if derived is not None:
            state = derived.state
            if text:
                state = UserState(f"{text.strip()} ; {state.text}", state.history_rows)
            hist = UserHistory(derived.history_rows, derived.history_times)
            return UserContext(user_id, state, hist, known=True, interactions=derived.interactions)
        if text:
            return UserContext(user_id, UserState(text.strip(), []), UserHistory.empty(), known=True)
        if policy == "raise":
            raise UnknownUserError(f"unknown user '{user_id}' (no events; pass --history or --text, or use policy fallback)")
        if policy == "warn":
            warnings.warn(f"unknown user '{user_id}': served by popularity", UserWarning, stacklevel=2)
        return UserContext(user_id, UserState("", []), UserHistory.empty(), known=False)

    def user_vectors(self, states: list[UserState]) -> np.ndarray:
        means = history_means(
            [s.history_rows for s in states], self.item_vectors,
            self.config.towers.history_max_items, self.config.towers.history_half_life,
        )
        return self.towers.encode_users([s.text for s in states], means)

    # -- retrieval ----------------------------------------------------------------------------

    def allowed_mask(self, filters: Filters, history: UserHistory) -> np.ndarray | None:
        """Catalog rows the request may return (None: all)."""
        return self.masks.mask(filters, history.rows)

    def _index_restriction(self, filters: Filters) -> np.ndarray | None:
        """The catalog half of `filters` as the index's own mask (cached per filter)."""
        allowed = self.masks.catalog_mask(filters)
        if allowed is None:
            return None
        key = (self.index.version, *filters.catalog_key)  # the index may change in place (item updates)
        mask = self._index_masks.get(key)
        if mask is None:
            mask = self.index.allow_mask(self.catalog.item_ids, allowed)
            with self._index_masks_lock:  # requests run on a service's threadpool
                while len(self._index_masks) >= 256:
                    self._index_masks.pop(next(iter(self._index_masks)), None)
                self._index_masks[key] = mask
        return mask

    def search(self, user_vector: np.ndarray, k: int, filters: Filters, history: UserHistory) -> tuple[np.ndarray, np.ndarray]:
        """Two-tower nearest items as (catalog rows, scores), filters applied inside FAISS."""
        excluded = self.masks.excluded_rows(filters, history.rows)
        ids, scores = self.index.search(
            user_vector.reshape(1, -1), k, restrict=self._index_restriction(filters),
            exclude=[self.catalog.item_ids[r] for r in excluded.tolist()] or None,
        )
        rows = np.asarray([self.catalog.row_of[i] for i in ids[0]], dtype=np.int64)
        return rows, np.asarray(scores[0], dtype=np.float32)

    def candidates(self, context: UserContext, user_vector: np.ndarray | None, filters: Filters | None = None) -> CandidateSet:
        """Every source's candidates for one request; scores are computed for the candidates only
        (the two-tower's and ALS's best rows come from FAISS), so the cost follows them."""
        filters = filters or Filters()
        cfg = self.config.candidates
        stats = self.stats
        two_tower: np.ndarray | VectorScores
        if cfg.n_two_tower > 0 and context.known and user_vector is not None and (context.state.text or context.state.history_rows):
            tower_filters = replace(filters, exclude_bought=filters.exclude_bought or cfg.two_tower_new_only)
            tt_rows, _ = self.search(user_vector, cfg.n_two_tower, tower_filters, context.history)
            two_tower = VectorScores(self.item_vectors, user_vector)
        else:
            tt_rows, two_tower = np.zeros(0, dtype=np.int64), np.zeros(len(self.catalog), dtype=np.float32)
        return generate_candidates(
            tt_rows, two_tower, context.history, stats.now, stats.neighbour_rows, stats.neighbour_scores,
            stats.popularity, stats.popular_rows, cfg, allowed=self.masks.allows(filters, context.history.rows),
            rebuy_rate=stats.rebuy_rate,
            als_scores_all=stats.factors.row_scores(context.user_id) if stats.factors is not None else None,
            tifu_all=stats.tifu.sparse_scores(context.user_id, context.history.rows, context.history.times)
            if stats.tifu is not None and cfg.n_knn > 0 else None,
        )

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the retrieval components; saving over an artifact keeps its other stages
        (ranker, cross-encoder, set scorer)."""
        if not isinstance(self.towers, WritableTowers):
            raise ArtifactError("an exported ONNX folder is read-only: re-export it from the torch artifact (`recs export`)")
        path = Path(path)
        base = path if (path / "manifest.json").is_file() else None
        with ArtifactWriter(path, base=base) as writer:
            for name in _RETRIEVAL_COMPONENTS:
                if name in writer.components:
                    writer.remove_component(name)
            tower_files = self.towers.write(writer)
            writer.write_json("retrieval_config.json", self.config.model_dump(mode="json"))
            if self.report is not None:
                writer.write_json("train_report.json", self.report.__dict__)
            writer.add_component(
                "towers", "two_tower",
                files=[*tower_files, "retrieval_config.json"] + (["train_report.json"] if self.report is not None else []),
                config={"format": RETRIEVER_FORMAT, "dim": int(self.item_vectors.shape[1])},
            )
            self.write_data(writer)
        return path

    def write_data(self, writer: ArtifactWriter, interactions: bool = True) -> None:
        """The catalog, index and (with `interactions`) interactions components, replacing those
        `writer` has: what `save` writes besides the towers, and what an item change rewrites
        (in an ONNX folder too)."""
        for name in _RETRIEVAL_COMPONENTS[1:3]:
            if name in writer.components:
                writer.remove_component(name)
        self.items.write_parquet(writer.file("items.parquet"))
        # asarray: no copy of a large catalog's vectors when they are float32 already
        writer.write_npy("item_vectors.npy", np.asarray(self.item_vectors, dtype=np.float32))
        writer.add_component("catalog", "catalog", files=["items.parquet", "item_vectors.npy"], config={"items": len(self.catalog)})
        self.index.save(writer.path / "index")  # a folder: writer.file() is for files
        writer.add_component("index", "item_index", files=["index"], config={"kind": self.config.index_kind})
        if interactions:
            self.write_interactions(writer)

    def write_interactions(self, writer: ArtifactWriter) -> None:
        """The log, its statistics and the event-store marks (component "interactions", replaced):
        all `recs refresh` and `recs forget` rewrite, in a torch artifact or an ONNX export."""
        if "interactions" in writer.components:
            writer.remove_component("interactions")
        self.events.write_parquet(writer.file("events.parquet"))
        for name, array in self.stats.arrays().items():
            writer.write_npy(name, array)
        writer.write_json(STAT_FILES["meta"], self.stats.meta())
        writer.add_component(
            "interactions", "interactions",
            files=["events.parquet", *self.stats.arrays(), STAT_FILES["meta"]],
            config={"events": self.events.height, **({"store": self.store_marks} if self.store_marks else {})},
        )

    @classmethod
    def from_artifact(cls, artifact: Artifact, towers: TowerEncoders | None = None) -> Retriever:
        """The retriever saved in `artifact` (a trained folder or a `recs export` one); `towers`
        are its encoders (default: the torch towers saved in it)."""
        for name in ("catalog", "index", "interactions"):
            if not artifact.has_component(name):
                raise ArtifactError(f"{artifact.path}: no '{name}' component; was it made by `recs train`?")
        config = RetrievalConfig.parse_dict(artifact.read_json("retrieval_config.json"), source=f"{artifact.path}/retrieval_config.json")
        if towers is None:
            if not artifact.has_component("towers"):
                raise ArtifactError(f"{artifact.path}: no 'towers' component; was it made by `recs train`?")
            from recs.retrieval.encode import TorchTowers

            towers = TorchTowers.read(artifact, config.towers)
        report = None
        if "train_report.json" in artifact.files:
            from recs.retrieval.trainer import TrainReport

            report = TrainReport(**artifact.read_json("train_report.json"))
        items = artifact.read_parquet("items.parquet")
        events = artifact.read_parquet("events.parquet")
        has = set(artifact.files).__contains__
        stats = None
        if BehaviourStats.saved_in(has):
            stats = BehaviourStats.from_files(artifact.read_npy, lambda name: artifact.file(name).read_text(encoding="utf-8"), has)
        # An artifact written before the statistics were saved: fitted here, once, from its log.
        retriever = cls.assemble(
            towers, config, items, events, item_vectors=artifact.read_npy("item_vectors.npy"),
            index=ItemIndex.load(artifact.file("index")), stats=stats, report=report,
        )
        marks = artifact.component("interactions").config.get("store", {})
        retriever.store_marks = {str(k): int(v) for k, v in marks.items()} if isinstance(marks, dict) else {}
        return retriever

    @classmethod
    def load(cls, path: str | Path) -> Retriever:
        """The torch retriever of a trained artifact folder."""
        return cls.from_artifact(open_artifact(path))
