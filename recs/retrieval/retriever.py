"""The trained retrieval stage: towers + catalog vectors + FAISS index + what users did.

`Retriever.fit` trains the towers on a behaviour log and indexes the catalog; `save`/`load` go
through an artifact folder (safetensors, npy, parquet, FAISS; no pickle). It answers:
- `user_vectors(states)`: the user tower over history text (+ history item vectors);
- `search(...)`: the two-tower's nearest items, with filters, through the FAISS index;
- `candidates(...)`: every source merged, with per-source features (see candidates.py).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, open_artifact, register_component_kind
from recs.config import UnknownUserPolicy
from recs.data.splits import leave_last_out
from recs.data.text import render_item, render_user
from recs.errors import ArtifactError, UnknownItemError, UnknownUserError
from recs.retrieval.candidates import CandidateSet, UserHistory, generate_candidates
from recs.retrieval.config import RetrievalConfig
from recs.retrieval.copurchase import copurchase_neighbours
from recs.retrieval.factors import FILES as FACTOR_FILES
from recs.retrieval.factors import UserItemFactors, fit_factors
from recs.retrieval.history import history_means
from recs.retrieval.index import ItemIndex
from recs.retrieval.pairs import Catalog, UserState, build_examples, state_from_events

if TYPE_CHECKING:
    from recs.retrieval.towers import TwoTowerModel
    from recs.retrieval.trainer import TrainReport

__all__ = ["Filters", "RetrievalConfig", "Retriever", "UserContext"]

register_component_kind("interactions")
_RETRIEVAL_COMPONENTS = ("towers", "catalog", "index", "interactions")
RETRIEVER_FORMAT = 1


@dataclass
class Filters:
    category: str | None = None
    in_stock_only: bool = False
    exclude_bought: bool = False
    exclude: tuple[str, ...] = ()


@dataclass
class UserContext:
    """Everything the engine knows of one request's user."""

    user_id: str | None
    state: UserState
    history: UserHistory
    known: bool
    # Every interaction (catalog row, event kind, epoch seconds), chronological: ranking features.
    interactions: list[tuple[int, str, float]] = field(default_factory=list)


def item_rebuy_rate(purchases: pl.DataFrame, row_of: dict[str, int], n_items: int, shrink: float = 5.0) -> np.ndarray:
    """Per catalog row: buyers who bought it at two or more instants / (buyers + shrink). Staples
    are re-bought, one-offs are not; the shrink keeps items with few buyers near 0."""
    out = np.zeros(n_items, dtype=np.float32)
    if purchases.height == 0:
        return out
    per_user = purchases.group_by("user_id", "item_id").agg(pl.col("timestamp").n_unique().alias("n"))
    rates = per_user.group_by("item_id").agg(((pl.col("n") >= 2).sum() / (pl.len() + shrink)).alias("rate"))
    for item, rate in rates.iter_rows():
        out[row_of[item]] = rate
    return out


def read_factors(artifact: Artifact) -> UserItemFactors | None:
    """The saved collaborative factors, or None when the artifact predates them (they are refitted
    from its events where `implicit` is installed)."""
    if FACTOR_FILES["item_factors"] not in artifact.files:
        return None
    return UserItemFactors.from_files(artifact.read_npy)


def _epoch_seconds(series: pl.Series) -> np.ndarray:
    return series.dt.epoch("us").to_numpy().astype(np.float64) / 1e6


class Retriever:
    def __init__(
        self,
        model: TwoTowerModel,
        tokenizer,
        config: RetrievalConfig,
        items: pl.DataFrame,
        events: pl.DataFrame,
        item_vectors: np.ndarray | None = None,
        index: ItemIndex | None = None,
        neighbours: tuple[np.ndarray, np.ndarray] | None = None,
        report: TrainReport | None = None,
        factors: UserItemFactors | None = None,
    ) -> None:
        self.model = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        self.config = config
        self.items = items
        self.catalog = Catalog.from_items(items, lambda f: [render_item(r, config.item_template) for r in f.iter_rows(named=True)])
        self.events = events.select("user_id", "item_id", "timestamp", "event", "basket_id").filter(
            pl.col("item_id").is_in(list(self.catalog.row_of))
        )
        self.report = report
        self.now = float(_epoch_seconds(self.events["timestamp"]).max()) if self.events.height else 0.0
        purchases = self.events.filter(pl.col("event") == "purchase")
        counts = purchases.group_by("item_id").len()
        self.popularity = np.zeros(len(self.catalog), dtype=np.float64)
        for item, n in counts.iter_rows():
            self.popularity[self.catalog.row_of[item]] = n
        self.popular_rows = np.lexsort((np.arange(len(self.catalog)), -self.popularity))
        self.rebuy_rate = item_rebuy_rate(purchases, self.catalog.row_of, len(self.catalog))
        self.neighbours = neighbours or copurchase_neighbours(self.events, self.catalog.row_of, len(self.catalog))
        self.factors = factors
        if factors is None and config.candidates.als_factors > 0:
            self.factors = fit_factors(self.events, self.catalog.row_of, len(self.catalog), config.candidates.als_factors)
        self.item_vectors = item_vectors if item_vectors is not None else self.encode_catalog()
        self.index = index or self._build_index(self.item_vectors)
        self._by_user: dict[str, pl.DataFrame] | None = None
        self.in_stock = items["in_stock"].fill_null(True).to_numpy() if "in_stock" in items.columns else np.ones(len(self.catalog), bool)
        self.categories = items["category"].fill_null("").to_list() if "category" in items.columns else [""] * len(self.catalog)

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
        from recs.retrieval.towers import TwoTowerModel
        from recs.retrieval.trainer import TrainReport, make_validation_set, train_towers

        config = config or RetrievalConfig()
        tokenizer = load_tokenizer(config.towers.model)
        model = TwoTowerModel(load_backbone(config.towers.model), config.towers)
        catalog = Catalog.from_items(items, lambda f: [render_item(r, config.item_template) for r in f.iter_rows(named=True)])
        train_events = events
        if valid_targets is None:
            split = leave_last_out(events, items["item_id"])
            train_events, valid_targets = split.fit_events, split.test
        examples = build_examples(
            train_events, catalog, config.max_history_events, config.user_text_max_chars,
            new_items_only=config.train.positives == "new_to_user",
        )
        states = {
            str(user[0]): state_from_events(group, catalog, config.max_history_events, config.user_text_max_chars)
            for user, group in train_events.group_by("user_id")
        }
        if config.train.positives == "new_to_user":
            # Validate on what the towers are trained for: items new to the user.
            bought = train_events.filter(pl.col("event") == "purchase").select("user_id", "item_id").unique()
            valid_targets = valid_targets.join(bought, on=["user_id", "item_id"], how="anti")
        valid = make_validation_set(states, valid_targets, catalog, config.train.valid_users, config.train.seed)
        work = work_dir or Path(".recs-work")
        report = TrainReport()
        if len(examples) >= 2:
            report = train_towers(model, tokenizer, catalog, examples, valid, config.train, work, show_progress=show_progress)
        if config.train.lora:
            model.item_backbone = model.item_backbone.merge_and_unload()
            model.user_backbone = model.item_backbone if not config.towers.separate_backbones else model.user_backbone.merge_and_unload()
        return cls(model, tokenizer, config, items, events, report=report)

    @classmethod
    def zero_shot(cls, events: pl.DataFrame, items: pl.DataFrame, config: RetrievalConfig | None = None) -> Retriever:
        """The untuned backbone (identity heads): the zero-shot baseline."""
        from recs.encoders.backbone import load_backbone, load_tokenizer
        from recs.retrieval.towers import TwoTowerModel

        config = config or RetrievalConfig()
        model = TwoTowerModel(load_backbone(config.towers.model), config.towers)
        return cls(model, load_tokenizer(config.towers.model), config, items, events)

    def encode_catalog(self, show_progress: bool = False) -> np.ndarray:
        return self.encode_texts(self.catalog.texts, show_progress)

    def encode_texts(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Item-tower vectors of item texts (the ONNX runtime overrides this)."""
        from recs.retrieval.encode import encode_items

        return encode_items(self.model, self.tokenizer, texts, show_progress=show_progress)

    def _build_index(self, vectors: np.ndarray) -> ItemIndex:
        index = ItemIndex(dim=int(vectors.shape[1]), kind=self.config.index_kind)
        index.add(
            self.catalog.item_ids,
            vectors,
            categories=self.items["category"].to_list() if "category" in self.items.columns else None,
            in_stock=self.items["in_stock"].fill_null(True).to_list() if "in_stock" in self.items.columns else None,
        )
        return index

    def with_events(self, events: pl.DataFrame, items: pl.DataFrame | None = None) -> Retriever:
        """The same encoders (and vectors and index, when the catalog is unchanged) serving from
        `events`: the behaviour statistics are refitted from them. `items` swaps the catalog (its
        vectors are then re-encoded)."""
        same_catalog = items is None or items["item_id"].to_list() == self.items["item_id"].to_list()
        return type(self)(
            self.model, self.tokenizer, self.config, self.items if items is None else items, events,
            item_vectors=self.item_vectors if same_catalog else None,
            index=self.index if items is None else None, report=self.report,
        )

    def rebuild_index(self, items: pl.DataFrame | None = None, kind: str | None = None, show_progress: bool = True) -> None:
        """Re-encode the catalog (optionally a new one: new items are servable at once) and re-index."""
        config = self.config if kind is None else self.config.model_copy(update={"index_kind": kind})
        items = self.items if items is None else items
        vectors = self.encode_texts([render_item(r, config.item_template) for r in items.iter_rows(named=True)], show_progress)
        fresh = type(self)(self.model, self.tokenizer, config, items, self.events, item_vectors=vectors, report=self.report)
        self.__dict__.update(fresh.__dict__)

    # -- users ----------------------------------------------------------------------------------

    def _user_events(self) -> dict[str, pl.DataFrame]:
        if self._by_user is None:
            self._by_user = {str(k[0]): g for k, g in self.events.sort("timestamp").group_by("user_id", maintain_order=True)}
        return self._by_user

    def known_user(self, user_id: str) -> bool:
        return user_id in self._user_events()

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
                raise UnknownItemError(f"--history: unknown item id(s) {', '.join(unknown[:5])}")
            rows = [self.catalog.row_of[i] for i in history]
            entries = [("purchase", self.catalog.titles[r]) for r in rows]
            state = UserState(render_user(entries, self.config.user_text_max_chars, cold_start_text=text or ""), rows)
            hist = UserHistory(np.asarray(rows, dtype=np.int64), np.full(len(rows), self.now))
            return UserContext(user_id, state, hist, known=True, interactions=[(r, "purchase", self.now) for r in rows])
        if user_id is not None and self.known_user(user_id):
            events = self._user_events()[user_id]
            state = state_from_events(events, self.catalog, self.config.max_history_events, self.config.user_text_max_chars)
            if text:
                state = UserState(f"{text.strip()} ; {state.text}", state.history_rows)
            buys = events.filter(pl.col("event") == "purchase")
            hist = UserHistory(
                np.asarray([self.catalog.row_of[i] for i in buys["item_id"].to_list()], dtype=np.int64),
                _epoch_seconds(buys["timestamp"]),
            )
            interactions = list(zip(
                [self.catalog.row_of[i] for i in events["item_id"].to_list()],
                events["event"].to_list(), _epoch_seconds(events["timestamp"]).tolist(), strict=True,
            ))
            return UserContext(user_id, state, hist, known=True, interactions=interactions)
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
        from recs.retrieval.encode import encode_users

        return encode_users(self.model, self.tokenizer, [s.text for s in states], means)

    # -- retrieval ----------------------------------------------------------------------------

    def allowed_mask(self, filters: Filters, history: UserHistory) -> np.ndarray | None:
        if not (filters.category or filters.in_stock_only or filters.exclude_bought or filters.exclude):
            return None
        mask = np.ones(len(self.catalog), dtype=bool)
        if filters.category:
            prefix = filters.category.strip()
            mask &= np.array([c == prefix or c.startswith(prefix + " > ") for c in self.categories])
        if filters.in_stock_only:
            mask &= self.in_stock.astype(bool)
        if filters.exclude_bought and len(history.rows):
            mask[history.rows] = False
        for item in filters.exclude:
            if item in self.catalog.row_of:
                mask[self.catalog.row_of[item]] = False
        return mask

    def search(self, user_vector: np.ndarray, k: int, filters: Filters, history: UserHistory) -> tuple[np.ndarray, np.ndarray]:
        """Two-tower nearest items as (catalog rows, scores), filters applied inside FAISS."""
        exclude = list(filters.exclude)
        if filters.exclude_bought:
            exclude += [self.catalog.item_ids[r] for r in np.unique(history.rows)]
        ids, scores = self.index.search(
            user_vector.reshape(1, -1), k,
            category=filters.category, in_stock_only=filters.in_stock_only, exclude=exclude or None,
        )
        rows = np.asarray([self.catalog.row_of[i] for i in ids[0]], dtype=np.int64)
        return rows, np.asarray(scores[0], dtype=np.float32)

    def candidates(self, context: UserContext, user_vector: np.ndarray | None, filters: Filters | None = None) -> CandidateSet:
        filters = filters or Filters()
        cfg = self.config.candidates
        if context.known and user_vector is not None and (context.state.text or context.state.history_rows):
            tower_filters = replace(filters, exclude_bought=filters.exclude_bought or cfg.two_tower_new_only)
            tt_rows, _ = self.search(user_vector, cfg.n_two_tower, tower_filters, context.history)
            all_scores = self.item_vectors @ user_vector
        else:
            tt_rows, all_scores = np.zeros(0, dtype=np.int64), np.zeros(len(self.catalog), dtype=np.float32)
        return generate_candidates(
            tt_rows, all_scores, context.history, self.now, self.neighbours[0], self.neighbours[1],
            self.popularity, self.popular_rows, cfg, allowed=self.allowed_mask(filters, context.history),
            rebuy_rate=self.rebuy_rate,
            als_scores_all=self.factors.scores(context.user_id) if self.factors is not None else None,
        )

    # -- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        from recs.retrieval.checkpoint import model_state

        path = Path(path)
        # Saving over an artifact keeps its other stages (ranker, cross-encoder, set scorer).
        base = path if (path / "manifest.json").is_file() else None
        with ArtifactWriter(path, base=base) as writer:
            for name in _RETRIEVAL_COMPONENTS:
                if name in writer.components:
                    writer.remove_component(name)
            root = writer.path
            self.tokenizer.save_pretrained(str(root / "tokenizer"))
            (root / "backbone_config.json").write_text(self.model.item_backbone.config.to_json_string())
            writer.write_safetensors("towers.safetensors", model_state(self.model))
            writer.write_json("retrieval_config.json", self.config.model_dump(mode="json"))
            if self.report is not None:
                writer.write_json("train_report.json", self.report.__dict__)
            writer.add_component(
                "towers", "two_tower",
                files=["tokenizer", "backbone_config.json", "towers.safetensors", "retrieval_config.json"]
                + (["train_report.json"] if self.report is not None else []),
                config={"format": RETRIEVER_FORMAT, "dim": self.model.dim},
            )
            self.items.write_parquet(root / "items.parquet")
            writer.write_npy("item_vectors.npy", self.item_vectors.astype(np.float32))
            writer.add_component("catalog", "catalog", files=["items.parquet", "item_vectors.npy"], config={"items": len(self.catalog)})
            self.index.save(root / "index")
            writer.add_component("index", "item_index", files=["index"], config={"kind": self.config.index_kind})
            self.events.write_parquet(root / "events.parquet")
            writer.write_npy("neighbour_rows.npy", self.neighbours[0])
            writer.write_npy("neighbour_scores.npy", self.neighbours[1])
            factor_files = []
            if self.factors is not None:
                for name, array in self.factors.arrays().items():
                    writer.write_npy(name, array)
                    factor_files.append(name)
            writer.add_component(
                "interactions", "interactions",
                files=["events.parquet", "neighbour_rows.npy", "neighbour_scores.npy", *factor_files],
                config={"events": self.events.height},
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Retriever:
        from transformers import AutoModel, BertConfig

        from recs.encoders.backbone import load_tokenizer
        from recs.retrieval.checkpoint import load_model_state
        from recs.retrieval.towers import TwoTowerModel
        from recs.retrieval.trainer import TrainReport

        artifact = open_artifact(path)
        for name in ("towers", "catalog", "index", "interactions"):
            if not artifact.has_component(name):
                raise ArtifactError(f"{path}: no '{name}' component; was it made by `recs train`?")
        config = RetrievalConfig.parse_dict(artifact.read_json("retrieval_config.json"), source=f"{path}/retrieval_config.json")
        backbone_config = BertConfig.from_dict(json.loads(artifact.file("backbone_config.json").read_text()))
        model = TwoTowerModel(AutoModel.from_config(backbone_config), config.towers)
        load_model_state(model, artifact.read_safetensors("towers.safetensors", framework="pt"))
        tokenizer = load_tokenizer(artifact.file("tokenizer"))
        items = pl.read_parquet(artifact.file("items.parquet"))
        events = pl.read_parquet(artifact.file("events.parquet"))
        report = None
        if "train_report.json" in artifact.files:
            report = TrainReport(**artifact.read_json("train_report.json"))
        return cls(
            model, tokenizer, config, items, events,
            item_vectors=artifact.read_npy("item_vectors.npy"),
            index=ItemIndex.load(artifact.file("index")),
            neighbours=(artifact.read_npy("neighbour_rows.npy"), artifact.read_npy("neighbour_scores.npy")),
            report=report,
            factors=read_factors(artifact),
        )
