"""Loading a shop (items, events, optional bundles) into a validated, cleaned `Dataset`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl

from recs.config import DataConfig
from recs.data.baskets import assign_baskets
from recs.data.clean import CleaningReport, clean_events
from recs.data.io import find_table, read_table
from recs.data.schema import EVENTS_SCHEMA, Dataset
from recs.data.validate import (
    REQUIRED_COLUMNS,
    Problem,
    ValidationReport,
    missing_columns,
    validate_bundles,
    validate_events,
    validate_items,
)
from recs.errors import DataError


@dataclass
class LoadReport:
    validation: ValidationReport = field(default_factory=ValidationReport)
    cleaning: CleaningReport = field(default_factory=CleaningReport)

    def lines(self) -> list[str]:
        return self.validation.summary_lines() + self.cleaning.lines()


def _raise_for(problems: list[Problem]) -> None:
    if not problems:
        return
    more = len(problems) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''}; `recs data validate` lists them all)" if more else ""
    raise DataError(f"{problems[0]}{tail}")


def _apply_policy(
    frame: pl.DataFrame, problems: list[Problem], bad: pl.Series, file: str, on_bad_rows: str, report: ValidationReport
) -> pl.DataFrame:
    report.extend(problems)
    if not problems:
        return frame
    if on_bad_rows == "error":
        _raise_for(problems)
    first_kind_per_row: dict[int, str] = {}
    for p in problems:
        if p.row is not None:
            first_kind_per_row.setdefault(p.row, p.kind)
    for kind in first_kind_per_row.values():
        report.dropped[(file, kind)] += 1
    return frame.filter(~bad)


def load_tables(
    items_path: str | Path,
    events_path: str | Path | None,
    bundles_path: str | Path | None = None,
    config: DataConfig | None = None,
    collect_only: bool = False,
) -> tuple[Dataset, LoadReport]:
    """Read, validate and clean. `collect_only=True` never raises for row problems (used by
    `recs data validate` to list them all) and drops bad rows as `skip` would."""
    config = config or DataConfig()
    policy = "skip" if collect_only else config.on_bad_rows
    report = LoadReport()

    items_path = Path(items_path)
    raw_items = read_table(items_path)
    file_problems = missing_columns(raw_items, REQUIRED_COLUMNS["items"], items_path.name)
    if file_problems:
        _raise_for(file_problems)
    items, problems, bad = validate_items(raw_items, items_path.name)
    items = _apply_policy(items, problems, bad, items_path.name, policy, report.validation)
    if items.height == 0 and not collect_only:
        raise DataError(f"{items_path.name}: no valid items")
    known = items["item_id"]

    events = pl.DataFrame(schema={k: v for k, v in EVENTS_SCHEMA.items() if k != "basket_id"})
    if events_path is not None:
        events_path = Path(events_path)
        raw_events = read_table(events_path)
        _raise_for(missing_columns(raw_events, REQUIRED_COLUMNS["events"], events_path.name))
        events, problems, bad = validate_events(raw_events, events_path.name, known)
        events = _apply_policy(events, problems, bad, events_path.name, policy, report.validation)
        events, report.cleaning = clean_events(events, config.cleaning)
    events = assign_baskets(events, timedelta(minutes=config.session_gap_minutes))

    bundles = None
    if bundles_path is not None:
        bundles_path = Path(bundles_path)
        raw_bundles = read_table(bundles_path)
        _raise_for(missing_columns(raw_bundles, REQUIRED_COLUMNS["bundles"], bundles_path.name))
        bundles, problems, bad = validate_bundles(raw_bundles, bundles_path.name, known)
        bundles = _apply_policy(bundles, problems, bad, bundles_path.name, policy, report.validation)
    return Dataset(items=items, events=events, bundles=bundles), report


def load_dataset(
    folder: str | Path, config: DataConfig | None = None, require_events: bool = True
) -> tuple[Dataset, LoadReport]:
    """A shop folder holds items.*, events.* and optionally bundles.* (csv, tsv, parquet or jsonl)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found")
    return load_tables(
        find_table(folder, "items"),
        find_table(folder, "events", required=require_events),
        find_table(folder, "bundles", required=False),
        config=config,
    )
