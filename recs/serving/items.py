"""Item changes on a served model (`PUT /items/{id}`, `DELETE /items/{id}`) and on an artifact
folder (`recs items upsert`): the rules are `recs.retrieval.itemchanges`'; this module puts them
on an Engine (pipeline and bundler follow the new catalog) and on disk.

    summary = upsert_artifact("build/demo/model", ItemChanges.from_file("new_items.csv"))
    served = holder.change(lambda s: change_served(s, changes)[0])   # what the routes do
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, artifact_lock, open_artifact
from recs.ranking.pipeline import RankingPipeline
from recs.retrieval.itemchanges import ChangeSummary, ItemChanges, apply_item_changes
from recs.retrieval.retriever import Retriever
from recs.serving.engine import Engine
from recs.serving.holder import Served

__all__ = ["ChangeSummary", "ItemChanges", "change_served", "changed_engine", "changes_from_fields", "upsert_artifact"]


def changed_engine(engine: Engine, changes: ItemChanges) -> tuple[Engine, ChangeSummary]:
    """A new Engine over the changed catalog; `engine` keeps serving the requests it has."""
    retriever, rows, summary = apply_item_changes(engine.retriever, changes)
    p = engine.pipeline
    pipeline = RankingPipeline(retriever, ranker=p.ranker, cross_encoder=p.cross_encoder, discover=p.discover)
    bundler = engine.bundler.rebased(retriever, rows.new_of_old) if engine.bundler is not None else None
    new = Engine(retriever, pipeline, engine.options, bundler, engine.runtime)
    new.path, new.created = engine.path, engine.created
    return new, summary


def change_served(served: Served, changes: ItemChanges) -> tuple[Served, ChangeSummary]:
    engine, summary = changed_engine(served.engine, changes)
    return Served(engine, served.version, served.path), summary


def changes_from_fields(item_id: str, fields: dict[str, Any] | None) -> ItemChanges:
    """One item's fields (a request body, an event store's item change; None: removed), checked
    as an items file's row would be."""
    if fields is None:
        return ItemChanges.from_raw(None, "", remove=[item_id])
    row = {name: None if value is None else str(value) for name, value in fields.items() if name != "item_id"}
    raw = pl.DataFrame({"item_id": [item_id], **{name: [value] for name, value in row.items()}},
                       schema={"item_id": pl.Utf8, **dict.fromkeys(row, pl.Utf8)})
    return ItemChanges.from_raw(raw, f"item {item_id!r}")


def _read_retriever(artifact: Artifact) -> Retriever:
    """The retriever of a torch artifact or an ONNX export (item tower in fp32: new vectors as
    close as can be to the ones the catalog was encoded with)."""
    from recs.serving.onnx_runtime import OnnxTowers, RuntimeOptions, is_onnx_export

    if is_onnx_export(artifact):
        return Retriever.from_artifact(artifact, OnnxTowers.from_artifact(artifact, RuntimeOptions(precision="fp32")))
    return Retriever.from_artifact(artifact)


def upsert_artifact(model: str | Path, changes: ItemChanges) -> ChangeSummary:
    """Write a new version of the artifact at `model` with `changes` applied: the catalog and
    index components replaced (and the interactions when items were added or removed), the rest
    kept; atomic, under the artifact's writer lock."""
    model = Path(model)
    with artifact_lock(model, create=False):
        retriever, _, summary = apply_item_changes(_read_retriever(open_artifact(model)), changes)
        with ArtifactWriter(model, base=model) as writer:
            retriever.write_data(writer, interactions=summary.changed_rows)
    return summary
