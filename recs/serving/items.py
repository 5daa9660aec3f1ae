"""Item changes on a served model (`PUT /items/{id}`, `DELETE /items/{id}`, an event store's
recorded item changes) and on an artifact folder (`recs items upsert`): the rules are
`recs.retrieval.itemchanges`'; this module puts them on an Engine (pipeline and bundler follow
the new catalog, swapped in as one reference: `Engine.adopt`) and on disk.

    summary = upsert_artifact("build/demo/model", ItemChanges.from_file("new_items.csv"))
    apply_changes(engine, changes_from_fields("SKU-9", {"title": "Kettle", "price": 20.0}))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recs.artifacts import Artifact, ArtifactWriter, artifact_lock, open_artifact
from recs.errors import DataError
from recs.ranking.pipeline import RankingPipeline
from recs.retrieval.itemchanges import ChangeSummary, ItemChanges, apply_item_changes
from recs.retrieval.retriever import Retriever
from recs.serving.engine import Engine
from recs.serving.eventstore import EventStore
from recs.serving.schemas import ItemChangeResponse

__all__ = ["ChangeSummary", "ItemChanges", "apply_changes", "apply_recorded", "changed_engine", "changes_from_fields",
           "fold_recorded", "fold_store_items", "item_change", "upsert_artifact"]

log = logging.getLogger("recs.serving")


def changed_engine(engine: Engine, changes: ItemChanges) -> tuple[Engine, ChangeSummary]:
    """A new Engine over the changed catalog; `engine` keeps serving the requests it has."""
    retriever, rows, summary = apply_item_changes(engine.retriever, changes)
    p = engine.pipeline
    pipeline = RankingPipeline(retriever, ranker=p.ranker, cross_encoder=p.cross_encoder, discover=p.discover)
    bundler = engine.bundler.rebased(retriever, rows.new_of_old) if engine.bundler is not None else None
    new = Engine(retriever, pipeline, engine.options, bundler, engine.runtime)
    new.path, new.created = engine.path, engine.created
    return new, summary


_changing = threading.Lock()  # one change at a time: two built from one model would undo each other


def apply_changes(engine: Engine, changes: ItemChanges) -> ChangeSummary:
    """Apply `changes` to the engine a service serves: built off to the side, then adopted."""
    with _changing:
        new, summary = changed_engine(engine, changes)
        engine.adopt(new)
    return summary


def item_change(before: Retriever, after: Retriever, item_id: str, removed: bool) -> ItemChangeResponse | None:
    """What an item change did to one item, read from the models before and after it (None: the
    item is not there, e.g. the store's applier refused the change: logged)."""
    if removed:
        return ItemChangeResponse(item_id=item_id, action="removed", reencoded=False)
    row = after.catalog.row_of.get(item_id)
    if row is None:
        return None
    old = before.catalog.row_of.get(item_id)
    if old is None:
        return ItemChangeResponse(item_id=item_id, action="added", reencoded=True)
    reencoded = not np.array_equal(before.item_vectors[old], after.item_vectors[row])
    return ItemChangeResponse(item_id=item_id, action="updated", reencoded=reencoded)


def _raw_row(item_id: str, fields: dict[str, Any]) -> pl.DataFrame:
    """One item as an items file's row would be read: text, checked by the loader's rules."""
    row = {name: None if value is None else str(value) for name, value in fields.items() if name != "item_id"}
    return pl.DataFrame({"item_id": [item_id], **{name: [value] for name, value in row.items()}},
                        schema={"item_id": pl.Utf8, **dict.fromkeys(row, pl.Utf8)})


def changes_from_fields(item_id: str, fields: dict[str, Any] | None) -> ItemChanges:
    """One item's fields (a request body; None: removed), checked as an items file's row."""
    if fields is None:
        return ItemChanges.from_raw(None, "", remove=[item_id])
    return ItemChanges.from_raw(_raw_row(item_id, fields), f"item {item_id!r}")


def fold_recorded(known: Mapping[str, int], recorded: Sequence[tuple[str, dict[str, Any] | None]]) -> ItemChanges | None:
    """Item changes in the order they were recorded, as one change over a catalog of `known`
    ids (the last per item wins); a removal of an item the catalog lacks and a row the loader
    refuses are skipped (logged)."""
    last: dict[str, dict[str, Any] | None] = {}
    for item_id, fields in recorded:
        last.pop(item_id, None)
        last[item_id] = fields
    rows: list[pl.DataFrame] = []
    for item_id, fields in last.items():
        if fields is None:
            continue
        try:
            changes_from_fields(item_id, fields)
        except DataError as err:
            log.warning("recorded item change skipped: %s", err)
            continue
        rows.append(_raw_row(item_id, fields))
    removed = [i for i, fields in last.items() if fields is None and i in known]
    if not rows and not removed:
        return None
    raw = pl.concat(rows, how="diagonal") if rows else None
    return ItemChanges.from_raw(raw, "recorded item changes", removed)


def apply_recorded(engine: Engine, recorded: Sequence[tuple[str, dict[str, Any] | None]]) -> None:
    """The event store's item changes onto a served engine (`StoreFollower`'s item applier). A
    failure is logged, never raised: it runs before requests, which must not all fail with it."""
    try:
        changes = fold_recorded(engine.retriever.catalog.row_of, recorded)
        if changes is not None:
            summary = apply_changes(engine, changes)
            log.info("item changes from the event store: %s", summary.line())
    except Exception:
        log.exception("%d item changes from the event store could not be applied", len(recorded))


def _read_retriever(artifact: Artifact) -> Retriever:
    """The retriever of a torch artifact or an ONNX export (item tower in fp32: new vectors as
    close as can be to the ones the catalog was encoded with)."""
    from recs.serving.onnx_runtime import read_towers

    return Retriever.from_artifact(artifact, read_towers(artifact))


def fold_store_items(retriever: Retriever, store: EventStore) -> tuple[Retriever, ChangeSummary]:
    """`retriever` with the store's item changes after its mark applied, and the mark moved to
    the last of them (`recs items upsert --events`, `recs refresh`)."""
    after = int(retriever.store_marks.get("items", 0))
    recorded = store.item_changes(after)
    summary = ChangeSummary()
    changes = fold_recorded(retriever.catalog.row_of, [(item, fields) for _, item, fields in recorded])
    if changes is not None:
        retriever, _, summary = apply_item_changes(retriever, changes)
    retriever.store_marks = {**retriever.store_marks, "items": max([after, *(seq for seq, _, _ in recorded)])}
    return retriever, summary


def upsert_artifact(model: str | Path, changes: ItemChanges, store: EventStore | None = None) -> ChangeSummary:
    """Write a new version of the artifact at `model` with `changes` applied (after the item
    changes `store` recorded since the artifact's mark, when given): the catalog and index
    components replaced (and the interactions when items were added or removed, or the mark
    moved), the rest kept; atomic, under the artifact's writer lock."""
    model = Path(model)
    with artifact_lock(model, create=False):
        retriever = _read_retriever(open_artifact(model))
        marks = dict(retriever.store_marks)
        summary = ChangeSummary()
        if store is not None:
            retriever, summary = fold_store_items(retriever, store)
        if changes.items.height or changes.remove:
            retriever, _, more = apply_item_changes(retriever, changes)
            summary = summary.then(more)
        with ArtifactWriter(model, base=model) as writer:
            retriever.write_data(writer, interactions=summary.changed_rows or retriever.store_marks != marks)
    return summary
