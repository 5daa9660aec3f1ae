"""The training chain, one step per CLI command and all of them in `fit_all` (`Engine.fit`):

    train_towers_step    `recs train`          towers, item vectors, index, statistics
    train_ranking_step   `recs train-ranker`   rankers, cross-encoder, the default R
    train_bundler_step   `recs train-bundler`  set scorer

Each step saves into the artifact folder atomically; the configuration used is saved beside
(`recs config show --model M`). Each holds the artifact's writer lock from its first read to its
last save (`artifact_lock`, which also cleans what a killed run left). The trainers' checkpoints go
to ``.<name>.work*`` beside the artifact, deleted when the step ends: no step resumes from them
(the trainers' `resume` is off), so a killed run's are only stale and the next writer removes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, artifact_lock
from recs.bundling.bundler import Bundler, save_bundler
from recs.config import RecsConfig
from recs.data.requirements import require_held_out, require_items
from recs.data.schema import Dataset
from recs.data.splits import Split, leave_last_out
from recs.distributed import is_main, world
from recs.errors import ConfigError
from recs.io import remove_tree, work_dir_of
from recs.ranking.artifact import save_ranking
from recs.ranking.fit import RankingModels, fit_ranking
from recs.ranking.pipeline import RankingPipeline, RankOptions
from recs.retrieval.retriever import Retriever

__all__ = ["CONFIG_FILE", "artifact_step", "fit_all", "read_config", "require_ranking_data", "save_config", "train_bundler_step", "train_ranking_step",
           "train_towers_step"]

log = logging.getLogger(__name__)

CONFIG_COMPONENT = "config"
CONFIG_FILE = "recs_config.json"


@contextmanager
def artifact_step(out: Path, what: str = "", create: bool = False) -> Iterator[Path]:
    """The artifact locked for one step, and its work folder (deleted when the step ends)."""
    with artifact_lock(out, create=create):
        work = work_dir_of(out, what)
        try:
            yield work
        finally:
            remove_tree(work)


def save_config(path: Path, config: RecsConfig) -> None:
    """Record the configuration a model was trained with (replacing an older record)."""
    with ArtifactWriter(path, base=path) as writer:
        if CONFIG_COMPONENT in writer.components:
            writer.remove_component(CONFIG_COMPONENT)
        writer.write_json(CONFIG_FILE, config.model_dump(mode="json"))
        writer.add_component(CONFIG_COMPONENT, "config", files=[CONFIG_FILE])


def read_config(artifact: Artifact) -> RecsConfig | None:
    """The saved configuration (None for artifacts made before it was saved)."""
    if not artifact.has_component(CONFIG_COMPONENT):
        return None
    return RecsConfig.parse_dict(artifact.read_json(CONFIG_FILE), source=f"{artifact.path}/{CONFIG_FILE}")


def _one_process(what: str) -> None:
    """Refuse a step that only runs in one process when started under torchrun: every rank would
    take the artifact's lock in turn (and wait on the others' collectives: a deadlock)."""
    if world().distributed:
        raise ConfigError(f"{what} runs in one process; under torchrun only the towers train (`recs train`)")


def train_towers_step(dataset: Dataset, config: RecsConfig, out: Path, show_progress: bool = True) -> Retriever:
    if not is_main():
        # Under torchrun the other ranks train beside rank 0 (recs/distributed.py) and write
        # nothing: rank 0 holds the lock, logs in the work folder and saves the artifact.
        return Retriever.fit(dataset.events, dataset.items, config.retrieval, work_dir=work_dir_of(out), show_progress=False)
    with artifact_step(out, create=True) as work:
        retriever = Retriever.fit(dataset.events, dataset.items, config.retrieval, work_dir=work, show_progress=show_progress)
        retriever.save(out)
        save_config(out, config)
    return retriever


def require_ranking_data(dataset: Dataset, config: RecsConfig) -> Split:
    """The split the ranking stage learns from; DataError when there is nothing to learn from
    (unless no ranking model is to be trained)."""
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    if config.ranking.train_ranker or config.ranking.train_cross_encoder:
        require_items(dataset.items, "recs train-ranker")
        require_held_out(split, "recs train-ranker")
    return split


def train_ranking_step(
    retriever: Retriever, dataset: Dataset, config: RecsConfig, out: Path, rerank_top: int | None = None,
    show_progress: bool = True,
) -> tuple[RankingModels, RankOptions]:
    """Rankers on each user's last basket (held out from the towers); the default R chosen on
    held-out users unless `rerank_top` is given. Returns the models and the saved options;
    `models.report["removed"]` names the ranking components the artifact had and no longer has."""
    _one_process("training the ranking stage")
    split = require_ranking_data(dataset, config)
    options = config.serving.options
    if rerank_top is not None:
        options = options.model_copy(update={"rerank_top": rerank_top})
    ranking = config.ranking.model_copy(update={"options": options})
    with artifact_step(out) as work:
        models = fit_ranking(retriever, split.fit_events, split.test, ranking, work_dir=work, show_progress=show_progress)
        decision = models.report.get("rerank_decision")
        if rerank_top is None and decision is not None:
            options = options.model_copy(update={"rerank_top": int(decision["default_rerank_top"])})
        pipeline = RankingPipeline(retriever, models.ranker, models.cross_encoder, models.discover)
        models.report["removed"] = save_ranking(out, pipeline, options)
        save_config(out, config.model_copy(update={"serving": config.serving.model_copy(update={"options": options})}))
    return models, options


def train_bundler_step(retriever: Retriever, dataset: Dataset, config: RecsConfig, out: Path, show_progress: bool = True) -> Bundler:
    _one_process("training the set scorer")
    require_items(dataset.items, "recs train-bundler")
    with artifact_step(out, "bundler") as work:
        bundler = Bundler.fit(retriever, events=dataset.events, bundles=dataset.bundles, config=config.bundling,
                              work_dir=work, show_progress=show_progress)
        save_bundler(out, bundler)
        save_config(out, config)
    return bundler


def fit_all(dataset: Dataset, config: RecsConfig, out: Path, show_progress: bool = True) -> Path:
    """Every step in order into `out`. The set scorer is trained when there are baskets or
    curated bundles to learn from. The artifact stays locked throughout."""
    _one_process("fitting every step (Engine.fit)")
    require_ranking_data(dataset, config)  # before the towers train, not after
    with artifact_lock(out):
        retriever = train_towers_step(dataset, config, out, show_progress)
        _, options = train_ranking_step(retriever, dataset, config, out, show_progress=show_progress)
        config = config.model_copy(update={"serving": config.serving.model_copy(update={"options": options})})
        has_sets = (dataset.bundles is not None and dataset.bundles.height > 0) or dataset.events.height > 0
        if has_sets:
            train_bundler_step(retriever, dataset, config, out, show_progress)
    return out


def frames_dataset(items: pl.DataFrame, events: pl.DataFrame, bundles: pl.DataFrame | None, config: RecsConfig) -> Dataset:
    """Frames as a user hands them over, validated and cleaned as files are (`[data]` section)."""
    from recs.data.load import dataset_from_frames

    dataset, report = dataset_from_frames(items, events, bundles, config.data)
    report.publish(config.data.skip_report, log.warning)  # what `skip` did, as the CLI says it
    return dataset
