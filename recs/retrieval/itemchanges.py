"""Items added, changed and removed on a loaded retriever, without re-encoding the catalog or
rebuilding the index: `apply_item_changes(retriever, changes) -> (new retriever, row map, summary)`.

The new retriever is built off to the side and the old one is left as it was (its index is
copied before it is changed), so requests in flight on the old one never see half of a change;
the caller swaps one reference (`recs.serving.items`). Rules:
- new items: rendered to text (`render_item`), encoded with the item tower, added to the index;
  they have no behaviour statistics (zero popularity, no neighbours, zero ALS factors) until
  `recs refresh` refits them, but are recommendable by the two-tower at once;
- changed items: the row is replaced in place (columns a change does not give are kept); the
  item is re-encoded when the text the tower reads changed, the price aside (a price feed must
  not re-encode the shop; the vector keeps the old price in its text until the next re-index);
- removed items: gone from the catalog, the vectors, the index, every statistic and neighbour
  list, every user's history and the log served from (`RowMap` carries every per-item array).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recs.data.io import read_table
from recs.data.load import catalog_from_raw
from recs.data.text import render_item
from recs.errors import ConfigError, UnknownItemError
from recs.retrieval.pairs import Catalog
from recs.retrieval.retriever import Retriever
from recs.retrieval.rowmap import RowMap

__all__ = ["ChangeSummary", "ItemChanges", "apply_item_changes"]


@dataclass(frozen=True)
class ItemChanges:
    """Validated item rows to add or update (a row with a known id is an update), the columns
    they give (an update keeps the others) and the ids to remove."""

    items: pl.DataFrame
    columns: frozenset[str]
    remove: tuple[str, ...] = ()

    @classmethod
    def from_raw(cls, raw: pl.DataFrame | None, source: str, remove: Sequence[str] = ()) -> ItemChanges:
        """Rows as read (a file, a request body), validated as an items file's (errors name
        `source`, the row and the column)."""
        if raw is None:
            return cls(pl.DataFrame({"item_id": [], "title": []}, schema={"item_id": pl.Utf8, "title": pl.Utf8}),
                       frozenset(), tuple(remove))
        return cls(catalog_from_raw(raw, source), frozenset(raw.columns), tuple(remove))

    @classmethod
    def from_file(cls, path: str | Path | None, remove: Sequence[str] = ()) -> ItemChanges:
        """An items file (CSV, TSV, Parquet, JSONL: the loader's formats) and/or ids to remove."""
        return cls.from_raw(read_table(path) if path is not None else None, Path(path).name if path else "", remove)


@dataclass
class ChangeSummary:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    reencoded: list[str] = field(default_factory=list)  # added or updated items encoded now
    removed: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.reencoded)} re-encoded, "
                f"{len(self.removed)} removed")

    def then(self, other: ChangeSummary) -> ChangeSummary:
        """This change followed by `other`."""
        return ChangeSummary(self.added + other.added, self.updated + other.updated,
                             self.reencoded + other.reencoded, self.removed + other.removed)

    @property
    def changed_rows(self) -> bool:
        """Whether rows were added or removed (the statistics' arrays then change too)."""
        return bool(self.added or self.removed)


def _with_columns(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """`frame` with every column of `columns` (missing ones null text: extra item columns are text)."""
    missing = [c for c in columns if c not in frame.columns]
    return frame.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c) for c in missing).select(columns)


def _tower_text(row: dict[str, object], template: str) -> str:
    """What decides a re-encoding: the item's text without its price (see the module doc)."""
    return render_item({**row, "price": None}, template)


def _check(retriever: Retriever, changes: ItemChanges) -> tuple[list[str], list[str], list[str]]:
    """(new ids, updated ids, removed ids), refused when a removal names an unknown item or an
    item is both upserted and removed."""
    row_of = retriever.catalog.row_of
    ids = changes.items["item_id"].to_list()
    removed = list(dict.fromkeys(changes.remove))
    unknown = [i for i in removed if i not in row_of]
    if unknown:
        raise UnknownItemError(f"cannot remove unknown item id(s) {', '.join(unknown[:5])}")
    both = sorted(set(ids) & set(removed))
    if both:
        raise ConfigError(f"item {both[0]!r} is both upserted and removed")
    return [i for i in ids if i not in row_of], [i for i in ids if i in row_of], removed


def _merged_items(old: pl.DataFrame, changes: ItemChanges, updated: list[str], added: list[str],
                  removed: list[str]) -> pl.DataFrame:
    """The new catalog frame: old rows in their order (removed ones out, updated ones replaced),
    then the new items."""
    columns = list(old.columns) + [c for c in changes.items.columns if c not in old.columns]
    base = _with_columns(old, columns)
    if removed:
        base = base.filter(~pl.col("item_id").is_in(removed))
    if updated:
        given = [c for c in changes.items.columns if c in changes.columns or c in ("item_id", "title")]
        rows = changes.items.filter(pl.col("item_id").is_in(updated)).select(given)
        current = base.filter(pl.col("item_id").is_in(updated))
        base = base.update(current.update(rows, on="item_id", include_nulls=True), on="item_id", include_nulls=True)
    if added:
        new = _with_columns(changes.items.filter(pl.col("item_id").is_in(added)), columns)
        base = pl.concat([base, new.cast(dict(base.schema))], how="vertical")
    return base


def apply_item_changes(retriever: Retriever, changes: ItemChanges) -> tuple[Retriever, RowMap, ChangeSummary]:
    """A new Retriever with `changes` applied (module doc); `retriever` is left as it was, except
    that events reaching it from now on are passed to the new one (`Retriever.successor`)."""
    added, updated, removed = _check(retriever, changes)
    template = retriever.config.item_template
    old, catalog = retriever.items, retriever.catalog
    items = _merged_items(old, changes, updated, added, removed)
    gone = np.asarray([catalog.row_of[i] for i in removed], np.int64)
    rows = RowMap.of(np.setdiff1d(np.arange(len(catalog), dtype=np.int64), gone), len(catalog), len(added))
    texts = [catalog.texts[r] if r >= 0 else "" for r in rows.source.tolist()]
    ids = items["item_id"].to_list()
    new_catalog = Catalog(ids, texts, items["title"].to_list(), {item: i for i, item in enumerate(ids)})
    reencode: list[str] = list(added)
    changed = items.filter(pl.col("item_id").is_in(updated + added))
    for row in changed.iter_rows(named=True):
        r = new_catalog.row_of[row["item_id"]]
        new_catalog.texts[r] = render_item(row, template)
        if row["item_id"] in updated:
            before = old.row(catalog.row_of[row["item_id"]], named=True)
            if _tower_text(before, template) != _tower_text(row, template):
                reencode.append(row["item_id"])
    vectors = rows.take(retriever.item_vectors)
    fresh = np.zeros((0, vectors.shape[1]), np.float32)
    if reencode:
        fresh = retriever.encode_texts([new_catalog.texts[new_catalog.row_of[i]] for i in reencode]).astype(vectors.dtype)
        vectors[[new_catalog.row_of[i] for i in reencode]] = fresh
    index = retriever.index.copy()
    # The index keeps category and stock for its own filters: the changed rows' values.
    meta_of = {row["item_id"]: (row.get("category"), row.get("in_stock") is not False) for row in changed.iter_rows(named=True)}

    def index_meta(item_ids: list[str]) -> dict[str, list]:
        return {"categories": [meta_of[i][0] for i in item_ids], "in_stock": [meta_of[i][1] for i in item_ids]}

    indexed = [i for i in removed if i in index]
    if indexed:
        index.remove(indexed)
    vector_of = dict(zip(reencode, fresh, strict=True))
    moved = [i for i in reencode if i in updated and i in index]
    if moved:
        index.update(moved, np.stack([vector_of[i] for i in moved]), **index_meta(moved))
    kept = [i for i in updated if i not in vector_of and i in index]
    if kept:
        index.set_metadata(kept, **index_meta(kept))
    if added:
        index.add(added, np.stack([vector_of[i] for i in added]), **index_meta(added))
    # What users did is taken under the lock events and forgets take: none lands on the old
    # retriever once its log, statistics and users are carried over (they then go to the new one).
    with retriever._events_lock:
        events = retriever.events.filter(~pl.col("item_id").is_in(removed)) if removed else retriever.events
        new = Retriever(retriever.towers, retriever.config, items, events, vectors, index, retriever.stats.rebased(rows),
                        retriever.report, catalog=new_catalog)
        new.store_marks = dict(retriever.store_marks)
        if retriever._users is not None:
            new._users = retriever._users.rebased(new.catalog, rows)
        new.stats.now = max(new.stats.now, retriever.stats.now)
        retriever.successor = new
    new.category_codes  # noqa: B018 - built here, not by the first request after the swap
    return new, rows, ChangeSummary(added, updated, reencode, removed)
