"""`recs train --resume-from ART`: continue the towers' fine-tuning on the events that came after
ART's log, and write a new full artifact.

- New events: a shop's (`--data`) later than the last event of ART's own log (`events.parquet`;
  earlier ones are taken as already learned from), or the event store's (`--events`) after the
  marks ART holds, through `refresh.folded_log` (users with a pending forget request left out).
- Towers: ART's fine-tuned weights are the start. Training pairs are the baskets bought from the
  first new event on (their history: the combined log before them), mixed with a seeded replay
  of pairs from before (`replay` x the new pair count), so that the towers do not forget what the
  rest of the shop buys. Early stopping as in `recs train`, on the held-out last basket of the
  users with new events.
- Configuration: ART's (towers always: the weights fit no other), with the command's overrides.
- Then, on the combined log: the catalog re-encoded and re-indexed, the statistics refitted.
  The ranking stage and the set scorer ART had are retrained (they read the towers' scores and
  vectors, so the old ones no longer fit).
- Writing: everything is built in a staged copy of ART in the work folder, then swapped into
  OUT as one new version (`ArtifactWriter`): OUT is never left half-updated, and OUT may be ART.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, open_artifact
from recs.config import RecsConfig
from recs.data.requirements import require_items, require_training_pairs
from recs.data.schema import Dataset
from recs.data.splits import leave_last_out
from recs.errors import ArtifactError, ConfigError, DataError
from recs.retrieval.config import RetrievalConfig
from recs.retrieval.pairs import TrainingExamples, build_examples, target_event_kind
from recs.retrieval.retriever import Retriever, item_catalog, validation_targets
from recs.serving.eventstore import EventStore
from recs.serving.fit import (
    artifact_step,
    read_config,
    save_config,
    train_bundler_step,
    train_ranking_step,
)
from recs.serving.refresh import folded_log

__all__ = ["DEFAULT_REPLAY", "NewLog", "ResumeReport", "check_replay", "load_start", "resume_examples", "resume_settings",
           "resume_step", "shop_log", "store_log"]

DEFAULT_REPLAY = 0.5  # replayed old pairs per new pair
_RANKING = ("ranker", "discover", "cross_encoder")
_SET_SCORER = "set_scorer"


@dataclass(frozen=True)
class NewLog:
    """The log to resume on: ART's and the new events."""

    events: pl.DataFrame  # the combined log: user_id, item_id, timestamp, event, basket_id
    new_users: list[str]
    new_events: int
    since: datetime | None  # the first new event (None: none)
    ignored: int  # events given that were not new
    marks: dict[str, int]  # the event store's seqs the log holds
    forget_seq: int = 0  # the last forget request honoured


@dataclass
class ResumeReport:
    log_end: str  # the last event of the start artifact's log
    new_events: int
    ignored_events: int
    new_users: int
    new_pairs: int = 0
    replayed_pairs: int = 0
    new_items: int = 0
    retrained: list[str] = field(default_factory=list)


def load_start(path: Path) -> tuple[Artifact, Retriever]:
    """The torch artifact training resumes from; an ONNX export is refused (it has no weights to train)."""
    artifact = open_artifact(path)
    if artifact.components_of_kind("onnx"):
        raise ArtifactError(f"--resume-from {path} is an ONNX export (serving only): resume from the torch artifact it "
                            "was exported from, then `recs export` the result")
    return artifact, Retriever.from_artifact(artifact)


def resume_settings(artifact: Artifact, start: Retriever, given: RecsConfig | None, train: dict[str, Any]) -> RecsConfig:
    """ART's configuration (or --config's, when given) with the command's [retrieval.train]
    overrides; the towers' settings are always ART's, since its weights fit no others."""
    settings = given or read_config(artifact) or RecsConfig()
    retrieval = start.config if given is None else settings.retrieval
    retrieval = RetrievalConfig.parse_dict(
        {**retrieval.model_dump(), "towers": start.config.towers.model_dump(),
         "train": {**retrieval.train.model_dump(), **train}}, source="recs train --resume-from")
    return settings.model_copy(update={"retrieval": retrieval})


def check_replay(replay: float) -> float:
    if not 0 <= replay <= 100:  # NaN too
        raise ConfigError(f"--replay must be between 0 and 100 (old pairs replayed per new pair), got {replay}")
    return replay


def _log_end(start: Retriever) -> datetime:
    if start.events.height == 0:
        raise ArtifactError("the model's log (events.parquet) is empty: train it with `recs train` instead")
    return start.events["timestamp"].max()  # type: ignore[return-value]


def shop_log(start: Retriever, given: pl.DataFrame) -> NewLog:
    """ART's log + the events of a loaded shop (`recs.data.load`) after its end, their basket ids
    kept apart from the log's own (a shop of new events only numbers its sessions from 1 again)."""
    base = start.events
    end = _log_end(start)
    fresh = given.filter(pl.col("timestamp") > end).select(base.columns)
    tag = f"after{int(end.timestamp())}:"
    fresh = fresh.with_columns((pl.lit(tag) + pl.col("basket_id")).alias("basket_id")).cast(base.schema)  # type: ignore[arg-type]
    events = pl.concat([base, fresh]).sort(["user_id", "timestamp"], maintain_order=True)
    since = fresh["timestamp"].min() if fresh.height else None
    return NewLog(events, fresh["user_id"].unique().sort().to_list(), fresh.height, since,  # type: ignore[arg-type]
                  given.height - fresh.height, dict(start.store_marks))


def store_log(start: Retriever, store: EventStore) -> NewLog:
    """ART's log + the store's events after ART's marks, without users with a pending forget
    request (`folded_log`, the one owner of that rule)."""
    _log_end(start)
    folded = folded_log(start, store)
    fresh = folded.new_events
    since = fresh["timestamp"].min() if fresh.height else None
    return NewLog(folded.events, fresh["user_id"].unique().sort().to_list(), fresh.height, since,  # type: ignore[arg-type]
                  folded.skipped, folded.marks, folded.forget_seq)


def resume_examples(examples: TrainingExamples, since: datetime, replay: float, seed: int) -> tuple[TrainingExamples, int, int]:
    """The pairs whose basket was bought from `since` on, plus a seeded sample of `replay` times
    as many from before; returns them and the two counts."""
    if examples.target_times is None:
        raise ValueError("examples without target times")  # build_examples always sets them
    is_new = examples.target_times[examples.pair_state] >= since.timestamp()
    new, old = np.flatnonzero(is_new), np.flatnonzero(~is_new)
    n_replay = min(len(old), round(replay * len(new)))
    replayed = np.random.default_rng(seed).choice(old, size=n_replay, replace=False) if n_replay else old[:0]
    return examples.subset(np.sort(np.concatenate([new, replayed]))), len(new), n_replay


def _resume_towers(
    start: Retriever, items: pl.DataFrame, log: NewLog, config: RetrievalConfig, replay: float, work: Path,
    report: ResumeReport, show_progress: bool,
) -> Retriever:
    catalog = item_catalog(items, config)
    split = leave_last_out(log.events, items["item_id"])
    new_only = config.train.positives == "new_to_user"
    examples = build_examples(split.fit_events, catalog, config.max_history_events, config.user_text_max_chars,
                              new_items_only=new_only)
    examples, report.new_pairs, report.replayed_pairs = resume_examples(examples, log.since, replay, config.train.seed)  # type: ignore[arg-type]
    if report.new_pairs == 0:
        kind = target_event_kind(log.events)
        raise DataError(
            f"recs train --resume-from: no new training pairs in {report.new_events} new events of {report.new_users} "
            f"user(s): a pair is {'an item new to the user' if new_only else 'an item'} of a {kind} basket from the "
            "first new event on, with earlier events before it, and each user's last basket is held out for "
            "validation: resume once users have made more than one new basket")
    require_training_pairs(len(examples), new_only, "recs train --resume-from")
    valid = validation_targets(split.fit_events, split.test.filter(pl.col("user_id").is_in(log.new_users)), config)
    return Retriever.fine_tune(start.torch_towers(), config, items, log.events, split.fit_events, examples, valid,
                               work, show_progress)


def resume_step(
    start_artifact: Artifact,
    start: Retriever,
    log: NewLog,
    settings: RecsConfig,
    out: Path,
    items: pl.DataFrame | None = None,
    bundles: pl.DataFrame | None = None,
    replay: float = DEFAULT_REPLAY,
    store: EventStore | None = None,
    show_progress: bool = True,
) -> tuple[Retriever, ResumeReport]:
    """Resume `start` (read from `start_artifact`) on `log` (`shop_log` or `store_log`) and write
    the full artifact `out`. The catalog: `items` (default the model's); curated `bundles` for the
    set scorer (default those it was trained with). DataError when nothing is new. When `out` is
    ART itself, the `store`'s forget requests the log honoured are dropped (as `recs refresh` does):
    no version with those users is left; a separate OUT leaves them for ART's next refresh."""
    check_replay(replay)
    items = start.items if items is None else items
    require_items(items, "recs train --resume-from")
    report = ResumeReport(
        log_end=_log_end(start).isoformat(), new_events=log.new_events, ignored_events=log.ignored,
        new_users=len(log.new_users), new_items=len(set(items["item_id"].to_list()) - set(start.catalog.item_ids)),
    )
    if log.since is None:
        raise DataError(f"recs train --resume-from: no event given is new to the model (its log ends {report.log_end}"
                        f"{', store seq ' + str(log.marks['events']) if 'events' in log.marks else ''}): nothing new to learn from")
    events = log.events.filter(pl.col("item_id").is_in(items["item_id"].implode()))  # discontinued items leave the log
    log = NewLog(events, log.new_users, log.new_events, log.since, log.ignored, log.marks, log.forget_seq)
    has = start_artifact.has_component
    if has(_SET_SCORER) and bundles is None:
        from recs.bundling.bundler import Bundler

        bundles = Bundler.load(start_artifact, start).bundles
    with artifact_step(out, "resume", create=True) as work:
        staged = work / "staged"
        with ArtifactWriter(staged, base=start_artifact.path):
            pass  # a copy of ART: what is not retrained below (e.g. serving defaults) is kept
        retriever = _resume_towers(start, items, log, settings.retrieval, replay, work / "towers", report, show_progress)
        retriever.store_marks = dict(log.marks)  # a service replays the store from there
        retriever.save(staged)
        settings = settings.model_copy(update={"retrieval": retriever.config})
        save_config(staged, settings)
        dataset = Dataset(items=items, events=log.events, bundles=bundles)
        if any(has(name) for name in _RANKING):
            # Trained on the old towers' scores: retrained, the parts ART had and no others.
            ranking = settings.ranking.model_copy(update={
                "train_ranker": has("ranker"), "train_discover": has("discover"), "train_cross_encoder": has("cross_encoder")})
            _, options = train_ranking_step(retriever, dataset, settings.model_copy(update={"ranking": ranking}), staged,
                                            show_progress=show_progress)
            settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"options": options})})
            report.retrained.append("ranking stage")
        if has(_SET_SCORER):  # it reads the item vectors, which changed
            train_bundler_step(retriever, dataset, settings, staged, show_progress)
            report.retrained.append("set scorer")
        with ArtifactWriter(out, base=staged):
            pass  # one new version of OUT, swapped in atomically
    if store is not None and log.forget_seq and Path(out).resolve() == start_artifact.path.resolve():
        store.clear_forgets(log.forget_seq)
    return retriever, report
