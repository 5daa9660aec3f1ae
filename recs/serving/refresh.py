"""`recs refresh` and `recs forget`: a new version of an artifact from its log and the event store.

The log an artifact serves from (`events.parquet`) plus the store's events after the artifact's
marks, minus every user with a pending forget request (`folded_log`, the one owner of that rule:
`recs train --resume-from` reads its training events through it too), refits the statistics
(popularity, co-purchase, ALS, TIFU neighbours), the set scorer's co-occurrence counts and, in a
torch artifact, the rankers. The artifact is rewritten in place, atomically, under its writer lock;
its new marks say what it folded in, and the store then drops the forget requests it honoured.
An ONNX export gets its statistics refitted (its rankers and set scorer are graphs: refresh the
torch artifact and export again to refresh those). Item changes the store recorded after the
artifact's "items" mark are applied to the catalog first (`recs.serving.items.fold_store_items`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recs.artifacts import ArtifactWriter, artifact_lock, open_artifact
from recs.errors import ArtifactError
from recs.retrieval.retriever import Retriever
from recs.serving.eventstore import EventStore
from recs.serving.items import ChangeSummary, fold_store_items

__all__ = ["FoldedLog", "RefreshReport", "folded_log", "forget_user", "refresh"]

log = logging.getLogger("recs.serving")


@dataclass(frozen=True)
class FoldedLog:
    events: pl.DataFrame  # user_id, item_id, timestamp, event, basket_id: the next training set
    marks: dict[str, int]  # the store's last seqs this log holds
    added: int  # store events added
    forgotten_users: int
    forgotten_events: int  # events of forgotten users dropped from the artifact's log
    forget_seq: int  # the last forget request honoured
    new_events: pl.DataFrame  # the store's events added (catalog items only), basket ids set
    skipped: int  # store events left out: items the catalog lacks


def folded_log(retriever: Retriever, store: EventStore | None, forget: list[str] | None = None) -> FoldedLog:
    """The artifact's log + the store's newer events, without the users to forget (the store's
    pending requests and `forget`). Events for items the catalog lacks are left out."""
    marks = dict(retriever.store_marks)
    base = retriever.events
    new = base.clear()
    skipped = 0
    requests: list[tuple[int, str]] = []
    if store is not None:
        requests = store.forgets()
        fresh = store.read(marks.get("events", 0))
        if fresh.height:
            marks["events"] = int(fresh["seq"].max())  # type: ignore[arg-type]
            known = fresh.filter(pl.col("item_id").is_in(list(retriever.catalog.row_of)))
            skipped = fresh.height - known.height
            new = _baskets(known)
    users = {u for _, u in requests} | set(forget or [])
    forget_seq = max([marks.get("forgets", 0), *(s for s, _ in requests)])
    marks["forgets"] = forget_seq
    gone = base["user_id"].is_in(list(users)) if users else pl.repeat(False, base.height, eager=True)
    # A forgotten user's events in the store were deleted with the request: what is there came after.
    events = pl.concat([base.filter(~gone), new.select(base.columns).cast(base.schema)], how="vertical")
    events = events.sort(["user_id", "timestamp"], maintain_order=True)
    return FoldedLog(events, marks, new.height, len(users), int(gone.sum()), forget_seq, new, skipped)


def _baskets(fresh: pl.DataFrame) -> pl.DataFrame:
    """Basket ids for the store's purchases, as the loader sets them (`assign_baskets`: a given
    basket_id is an order, the others session windows), kept apart from the log's own ids."""
    from recs.data.baskets import assign_baskets

    if fresh.height == 0:
        return fresh.drop("seq")
    batch = f"store{int(fresh['seq'].min())}:"  # type: ignore[arg-type]
    framed = assign_baskets(fresh.drop("seq").rename({"basket_id": "order_id"}))
    return framed.with_columns((pl.lit(batch) + pl.col("basket_id")).alias("basket_id")).drop("order_id")


@dataclass
class RefreshReport:
    path: Path
    events: int  # in the new log
    added: int
    forgotten_users: int
    forgotten_events: int
    refitted: list[str] = field(default_factory=list)
    store_events_removed: int = 0  # `forget_user`: the user's events deleted from the store


def refresh(
    model: str | Path,
    store: EventStore | None,
    *,
    forget: list[str] | None = None,
    retrain_rankers: bool = True,
    show_progress: bool = True,
) -> RefreshReport:
    """Rewrite `model` as a new version: statistics (and, for a torch artifact, rankers when
    `retrain_rankers`, and the set scorer's counts) refitted on `folded_log`."""
    from recs.serving.load import read_engine

    model = Path(model)
    with artifact_lock(model):
        artifact = open_artifact(model)
        parts = read_engine(artifact)
        start, items = parts.retriever, ChangeSummary()
        if store is not None:  # the catalog first: the store's events may name new items
            start, items = fold_store_items(start, store)
        folded = folded_log(start, store, forget)
        if folded.events.height == 0:
            raise ArtifactError(f"{model}: no events would be left: nothing to serve from")
        retriever = start.with_events(folded.events)
        retriever.store_marks = folded.marks
        refitted = ["statistics"] + (["catalog: " + items.line()] if items.added or items.updated or items.removed else [])
        torch = parts.runtime is None
        with ArtifactWriter(model, base=model) as writer:
            if start is not parts.retriever:
                retriever.write_data(writer, interactions=False)
            retriever.write_interactions(writer)
            if parts.bundler is not None and torch:
                _refit_cooc(parts.bundler, retriever, folded.events)
                parts.bundler.retriever = retriever
                parts.bundler.write(writer)
                refitted.append("set scorer counts")
        if torch and retrain_rankers and parts.pipeline.ranker is not None:
            _retrain_rankers(model, retriever, artifact, show_progress)
            refitted.append("rankers")
        if store is not None and folded.forget_seq:
            store.clear_forgets(folded.forget_seq)
    log.info("refreshed %s: %d events (+%d), %d users forgotten", model, folded.events.height, folded.added, folded.forgotten_users)
    return RefreshReport(model, folded.events.height, folded.added, folded.forgotten_users, folded.forgotten_events, refitted)


def forget_user(model: str | Path, user_id: str, store: EventStore | None) -> RefreshReport:
    """`recs forget`: the user's events leave the store, then `model` is refreshed without them
    (statistics only: no ranker is retrained for one user)."""
    removed = store.forget(user_id) if store is not None else 0
    report = refresh(model, store, forget=[user_id], retrain_rankers=False, show_progress=False)
    report.store_events_removed = removed
    return report


def _refit_cooc(bundler: object, retriever: Retriever, events: pl.DataFrame) -> None:
    from recs.bundling.cooc import CoocStats
    from recs.bundling.sets import collect_sets

    scorer = bundler.scorer  # type: ignore[attr-defined]
    config = bundler.config  # type: ignore[attr-defined]
    sets = collect_sets(retriever.catalog.row_of, events, bundler.bundles, max_history=config.train.history_max_items)  # type: ignore[attr-defined]
    scorer.cooc = CoocStats.from_sets(sets.rows, len(retriever.catalog))


def _retrain_rankers(model: Path, retriever: Retriever, artifact: object, show_progress: bool) -> None:
    from recs.config import RecsConfig
    from recs.data.schema import Dataset
    from recs.serving.fit import read_config, train_ranking_step

    config = read_config(artifact) or RecsConfig()  # type: ignore[arg-type]
    dataset = Dataset(items=retriever.items, events=retriever.events)
    # Same R as before unless the model chose it on held-out users (then choose again).
    train_ranking_step(retriever, dataset, config, model, show_progress=show_progress)
