"""Loading a shop (items, events, optional bundles) into a validated, cleaned `Dataset`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl

from recs.data.baskets import assign_baskets
from recs.data.clean import CleaningReport, clean_events
from recs.data.config import DataConfig
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
    items_path = Path(items_path)
    events_path = None if events_path is None else Path(events_path)
    bundles_path = None if bundles_path is None else Path(bundles_path)
    return dataset_from_frames(
        read_table(items_path),
        None if events_path is None else read_table(events_path),
        None if bundles_path is None else read_table(bundles_path),
        config, collect_only,
        names=(items_path.name, events_path.name if events_path else "events", bundles_path.name if bundles_path else "bundles"),
    )


def dataset_from_frames(
    raw_items: pl.DataFrame,
    raw_events: pl.DataFrame | None,
    raw_bundles: pl.DataFrame | None = None,
    config: DataConfig | None = None,
    collect_only: bool = False,
    names: tuple[str, str, str] = ("items", "events", "bundles"),
) -> tuple[Dataset, LoadReport]:
    """Validate and clean frames as read from files (`names` stand for the files in messages)."""
    config = config or DataConfig()
    policy = "skip" if collect_only else config.on_bad_rows
    report = LoadReport()
    items_name, events_name, bundles_name = names
    file_problems = missing_columns(raw_items, REQUIRED_COLUMNS["items"], items_name)
    if file_problems:
        _raise_for(file_problems)
    items, problems, bad = validate_items(raw_items, items_name)
    items = _apply_policy(items, problems, bad, items_name, policy, report.validation)
    if items.height == 0 and not collect_only:
        raise DataError(f"{items_name}: no valid items")
    known = items["item_id"]

    events = pl.DataFrame(schema={k: v for k, v in EVENTS_SCHEMA.items() if k != "basket_id"})
    if raw_events is not None:
        _raise_for(missing_columns(raw_events, REQUIRED_COLUMNS["events"], events_name))
        events, problems, bad = validate_events(raw_events, events_name, known)
        events = _apply_policy(events, problems, bad, events_name, policy, report.validation)
        events, report.cleaning = clean_events(events, config.cleaning)
    events = assign_baskets(events, timedelta(minutes=config.session_gap_minutes))

    bundles = None
    if raw_bundles is not None:
        _raise_for(missing_columns(raw_bundles, REQUIRED_COLUMNS["bundles"], bundles_name))
        bundles, problems, bad = validate_bundles(raw_bundles, bundles_name, known)
        bundles = _apply_policy(bundles, problems, bad, bundles_name, policy, report.validation)
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
