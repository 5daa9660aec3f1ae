"""`recs train --resume-from ART`: continue the towers' fine-tuning on the events that came after
ART's log, and write a new full artifact.

- New events: those of a shop's log (or an event store) later than the last event of ART's own
  log (`events.parquet`); earlier ones are taken as already learned from and left out.
- Towers: ART's fine-tuned weights are the start. Training pairs are the baskets bought after
  ART's log (their history is the combined log before them), mixed with a seeded replay of
  pairs from before (`replay` x the new pair count), so that the towers do not forget what the
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

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, open_artifact
from recs.config import RecsConfig
from recs.data.baskets import assign_baskets
from recs.data.config import DataConfig
from recs.data.requirements import require_items, require_training_pairs
from recs.data.schema import EVENTS_SCHEMA, Dataset
from recs.data.splits import leave_last_out
from recs.errors import ArtifactError, ConfigError, DataError
from recs.retrieval.config import RetrievalConfig
from recs.retrieval.pairs import TrainingExamples, build_examples, target_event_kind
from recs.retrieval.retriever import Retriever, item_catalog, validation_targets
from recs.serving.fit import _step, read_config, save_config, train_bundler_step, train_ranking_step

__all__ = ["DEFAULT_REPLAY", "ResumeReport", "check_replay", "combine_logs", "load_start", "resume_examples", "resume_settings", "resume_step", "store_events"]

log = logging.getLogger(__name__)

DEFAULT_REPLAY = 0.5  # replayed old pairs per new pair
_RANKING = ("ranker", "discover", "cross_encoder")
_SET_SCORER = "set_scorer"


@dataclass
class ResumeReport:
    log_end: str  # the last event of the start artifact's log
    new_events: int
    ignored_events: int  # given but not after `log_end`
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


def _canonical(events: pl.DataFrame) -> pl.DataFrame:
    """Events with every column of the contract; order ids back from `o:` basket ids (a saved log
    keeps basket ids only), so that `assign_baskets` rebuilds the baskets of the combined log."""
    if "order_id" not in events.columns:
        basket = pl.col("basket_id") if "basket_id" in events.columns else pl.lit(None, pl.Utf8)
        events = events.with_columns(
            pl.when(basket.str.starts_with("o:")).then(basket.str.slice(2)).otherwise(None).alias("order_id"))
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in EVENTS_SCHEMA.items() if name not in events.columns]
    return events.with_columns(missing).select([pl.col(n).cast(t) for n, t in EVENTS_SCHEMA.items() if n != "basket_id"])


def combine_logs(old: pl.DataFrame, given: pl.DataFrame, session_gap: timedelta) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
    """(the combined log with its baskets, the new events, the end of `old`): new events are
    those of `given` after the last event of `old`."""
    if old.height == 0:
        raise ArtifactError("the model's log (events.parquet) is empty: train it with `recs train` instead")
    end = old["timestamp"].max()
    new = _canonical(given).filter(pl.col("timestamp") > end)
    combined = assign_baskets(pl.concat([_canonical(old), new]), session_gap)
    return combined, new, end  # type: ignore[return-value]


def resume_examples(examples: TrainingExamples, since: datetime, replay: float, seed: int) -> tuple[TrainingExamples, int, int]:
    """The pairs whose basket was bought after `since`, plus a seeded sample of `replay` times as
    many from before; returns them and the two counts."""
    if examples.target_times is None:
        raise ValueError("examples without target times")  # build_examples always sets them
    is_new = examples.target_times[examples.pair_state] > since.timestamp()
    new, old = np.flatnonzero(is_new), np.flatnonzero(~is_new)
    n_replay = min(len(old), round(replay * len(new)))
    replayed = np.random.default_rng(seed).choice(old, size=n_replay, replace=False) if n_replay else old[:0]
    return examples.subset(np.sort(np.concatenate([new, replayed]))), len(new), n_replay


def check_replay(replay: float) -> float:
    if not 0 <= replay <= 100:  # NaN too
        raise ConfigError(f"--replay must be between 0 and 100 (old pairs replayed per new pair), got {replay}")
    return replay


def store_events(spec: str, items: pl.DataFrame, settings: DataConfig) -> pl.DataFrame:
    """The events of an event store (`recs.serving.eventstore`), validated and cleaned as a shop's
    log is (`[data]`) against the model's catalog; their basket ids stand for order ids."""
    from recs.data.load import dataset_from_frames
    from recs.serving.eventstore import open_store

    if not spec.startswith(("postgresql://", "postgres://")) and not Path(spec).is_file():
        raise DataError(f"--events {spec}: no event store there (a SQLite file, or a postgresql:// DSN)")
    store = open_store(spec)
    try:
        raw = store.read()
    finally:
        store.close()
    raw = raw.drop("seq").rename({"basket_id": "order_id"})
    name = "the event store" if spec.startswith("postgres") else Path(spec).name  # a DSN may hold a password
    dataset, report = dataset_from_frames(items, raw, None, settings, names=("the model's items", name, "bundles"))
    report.publish(settings.skip_report, log.warning)
    return dataset.events


def _resume_towers(
    start: Retriever, items: pl.DataFrame, combined: pl.DataFrame, new: pl.DataFrame, since: datetime,
    config: RetrievalConfig, replay: float, work: Path, report: ResumeReport, show_progress: bool,
) -> Retriever:
    catalog = item_catalog(items, config)
    split = leave_last_out(combined, items["item_id"])
    new_only = config.train.positives == "new_to_user"
    examples = build_examples(split.fit_events, catalog, config.max_history_events, config.user_text_max_chars,
                              new_items_only=new_only)
    examples, report.new_pairs, report.replayed_pairs = resume_examples(examples, since, replay, config.train.seed)
    if report.new_pairs == 0:
        kind = target_event_kind(combined)
        raise DataError(
            f"recs train --resume-from: no new training pairs in {report.new_events} new events of {report.new_users} "
            f"user(s): a pair is {'an item new to the user' if new_only else 'an item'} of a {kind} basket after the "
            f"model's log (which ends {since.isoformat()}) with earlier events before it, and each user's last basket "
            "is held out for validation: resume once users have made more than one new basket")
    require_training_pairs(len(examples), new_only, "recs train --resume-from")
    new_users = new["user_id"].unique().implode()
    valid = validation_targets(split.fit_events, split.test.filter(pl.col("user_id").is_in(new_users)), config)
    return Retriever.fine_tune(start.torch_towers(), config, items, combined, split.fit_events, examples, valid,
                               work, show_progress)


def resume_step(
    start_artifact: Artifact,
    start: Retriever,
    events: pl.DataFrame,
    settings: RecsConfig,
    out: Path,
    items: pl.DataFrame | None = None,
    bundles: pl.DataFrame | None = None,
    replay: float = DEFAULT_REPLAY,
    show_progress: bool = True,
) -> tuple[Retriever, ResumeReport]:
    """Resume `start` (from `start_artifact`) on `events` (the catalog: `items`, default the
    model's; curated `bundles` for the set scorer, default those it was trained with) and write
    the full artifact `out`. DataError when nothing is new."""
    check_replay(replay)
    items = start.items if items is None else items
    require_items(items, "recs train --resume-from")
    combined, new, since = combine_logs(start.events, events, timedelta(minutes=settings.data.session_gap_minutes))
    report = ResumeReport(
        log_end=since.isoformat(), new_events=new.height, ignored_events=events.height - new.height,
        new_users=new["user_id"].n_unique(), new_items=len(set(items["item_id"].to_list()) - set(start.catalog.item_ids)),
    )
    if new.height == 0:
        raise DataError(f"recs train --resume-from: none of the {events.height} event(s) given is after the model's log, "
                        f"which ends {report.log_end}: nothing new to learn from")
    combined = combined.filter(pl.col("item_id").is_in(items["item_id"].implode()))  # discontinued items leave the log
    has = start_artifact.has_component
    if has(_SET_SCORER) and bundles is None:
        from recs.bundling.bundler import Bundler

        bundles = Bundler.load(start_artifact, start).bundles
    with _step(out, "resume", create=True) as work:
        staged = work / "staged"
        with ArtifactWriter(staged, base=start_artifact.path):
            pass  # a copy of ART: what is not retrained below (e.g. serving defaults) is kept
        retriever = _resume_towers(start, items, combined, new, since, settings.retrieval, replay, work / "towers",
                                   report, show_progress)
        retriever.save(staged)
        settings = settings.model_copy(update={"retrieval": retriever.config})
        save_config(staged, settings)
        dataset = Dataset(items=items, events=combined, bundles=bundles)
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
    return retriever, report
