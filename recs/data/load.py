"""Loading a shop (items, events, optional bundles) into a validated, cleaned `Dataset`.

A catalog without items, or a required behaviour log without events (header only, or every row
dropped), is a DataError: nothing downstream can learn from it."""

from __future__ import annotations

from collections.abc import Callable
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
    ROW_DROPPED,
    Problem,
    ValidationReport,
    dropped_item_ids,
    future_timestamps,
    missing_columns,
    validate_bundles,
    validate_events,
    validate_items,
)
from recs.errors import ConfigError, DataError

SHOWN_SKIPPED_ROWS = 20  # rows said on screen; the skip report holds them all


@dataclass
class LoadReport:
    validation: ValidationReport = field(default_factory=ValidationReport)
    cleaning: CleaningReport = field(default_factory=CleaningReport)
    warnings: list[str] = field(default_factory=list)  # kept data that looks wrong (future times, empty files)

    def lines(self) -> list[str]:
        return [f"warning: {w}" for w in self.warnings] + self.validation.summary_lines() + self.cleaning.lines()

    def publish(self, skip_report: Path, say: Callable[[str], object], shown: int = SHOWN_SKIPPED_ROWS) -> None:
        """Say the warnings and counts, then the first `shown` rows dropped or nulled, and write
        every one of them to `skip_report` (only when there is one): how the CLI and `Engine.fit`
        report what `skip` did."""
        for line in self.lines():
            say(line)
        rows = [p for p in self.validation.problems if p.row is not None]
        if not rows:
            return
        for problem in rows[:shown]:
            say(f"  {problem} -> {problem.action}")
        if len(rows) > shown:
            say(f"  ... and {len(rows) - shown} more")
        try:
            self.validation.write_csv(skip_report)
        except OSError as err:
            raise ConfigError(f"--skip-report {skip_report}: cannot write it: {err.strerror or err}") from None
        say(f"all {len(rows)} problems (rows dropped, values set to null) are listed in {skip_report}")


def _raise_for(problems: list[Problem]) -> None:
    if not problems:
        return
    more = len(problems) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''}; `recs data validate` lists them all)" if more else ""
    if problems[0].nulled:
        tail += "; --on-bad-rows skip would set the value to null"
    raise DataError(f"{problems[0]}{tail}")


def _apply_policy(
    frame: pl.DataFrame, problems: list[Problem], bad: pl.Series, file: str, on_bad_rows: str, report: ValidationReport
) -> pl.DataFrame:
    report.extend(problems)
    if not problems:
        return frame
    if on_bad_rows == "error":
        _raise_for(problems)
    # A dropped row counts once, under its first reason (validators list those first).
    reason_of_row: dict[int, str] = {}
    for p in problems:
        if p.row is None:
            continue
        if p.action == ROW_DROPPED:
            reason_of_row.setdefault(p.row, p.kind)
        else:
            report.nulled[(file, p.kind)] += 1
    for kind in reason_of_row.values():
        report.dropped[(file, kind)] += 1
    return frame.filter(~bad)


def _no_rows(what: str) -> str:
    return f"no {what} (the file has a header and no rows)"


def _all_dropped(file: str, what: str, rows: int, report: LoadReport, cleaned: bool = False) -> str:
    """Why a non-empty file left nothing: its dropped rows by reason (and cleaning's, for events)."""
    reasons = [f"{n} {kind}" for (f, kind), n in sorted(report.validation.dropped.items()) if f == file]
    if cleaned:
        reasons += [f"{n} {reason}" for reason, n in sorted(report.cleaning.dropped.items()) if n]
    return f"{file}: no {what} left: all {rows} rows were dropped ({', '.join(reasons)})"


def load_tables(
    items_path: str | Path,
    events_path: str | Path | None,
    bundles_path: str | Path | None = None,
    config: DataConfig | None = None,
    collect_only: bool = False,
    require_events: bool = True,
    report: LoadReport | None = None,
) -> tuple[Dataset, LoadReport]:
    """Read, validate and clean. `collect_only=True` never raises for row problems (used by
    `recs data validate` to list them all) and drops bad rows as `skip` would. See
    `dataset_from_frames` for `require_events` and `report`."""
    items_path = Path(items_path)
    events_path = None if events_path is None else Path(events_path)
    bundles_path = None if bundles_path is None else Path(bundles_path)
    return dataset_from_frames(
        read_table(items_path),
        None if events_path is None else read_table(events_path),
        None if bundles_path is None else read_table(bundles_path),
        config, collect_only,
        names=(items_path.name, events_path.name if events_path else "events", bundles_path.name if bundles_path else "bundles"),
        require_events=require_events, report=report,
    )


def dataset_from_frames(
    raw_items: pl.DataFrame,
    raw_events: pl.DataFrame | None,
    raw_bundles: pl.DataFrame | None = None,
    config: DataConfig | None = None,
    collect_only: bool = False,
    names: tuple[str, str, str] = ("items", "events", "bundles"),
    require_events: bool = True,
    report: LoadReport | None = None,
) -> tuple[Dataset, LoadReport]:
    """Validate and clean frames as read from files (`names` stand for the files in messages).

    Items must leave at least one row. Events given with `require_events` must leave at least one
    event (without it an empty log is a warning: curated bundles alone can train the set scorer).
    `report`, when given, is filled in place, so a caller still has it when a DataError is raised."""
    config = config or DataConfig()
    policy = "skip" if collect_only else config.on_bad_rows
    report = report if report is not None else LoadReport()
    items_name, events_name, bundles_name = names
    file_problems = missing_columns(raw_items, REQUIRED_COLUMNS["items"], items_name)
    if file_problems:
        _raise_for(file_problems)
    if raw_items.height == 0:
        raise DataError(f"{items_name}: {_no_rows('items')}")
    all_items, problems, bad = validate_items(raw_items, items_name)
    items = _apply_policy(all_items, problems, bad, items_name, policy, report.validation)
    if items.height == 0 and not collect_only:
        raise DataError(_all_dropped(items_name, "valid items", raw_items.height, report))
    known = items["item_id"]
    dropped = dropped_item_ids(all_items["item_id"], bad, items_name)

    events = pl.DataFrame(schema={k: v for k, v in EVENTS_SCHEMA.items() if k != "basket_id"})
    if raw_events is not None:
        _raise_for(missing_columns(raw_events, REQUIRED_COLUMNS["events"], events_name))
        events, problems, bad = validate_events(raw_events, events_name, known, dropped)
        events = _apply_policy(events, problems, bad, events_name, policy, report.validation)
        future = future_timestamps(events, events_name)
        if future:
            report.warnings.append(future)
        events, report.cleaning = clean_events(events, config.cleaning)
        _check_events_left(raw_events.height, events.height, events_name, require_events, collect_only, report)
    events = assign_baskets(events, timedelta(minutes=config.session_gap_minutes))

    bundles = None
    if raw_bundles is not None:
        _raise_for(missing_columns(raw_bundles, REQUIRED_COLUMNS["bundles"], bundles_name))
        if raw_bundles.height == 0:
            report.warnings.append(f"{bundles_name}: {_no_rows('bundles')}")
        bundles, problems, bad = validate_bundles(raw_bundles, bundles_name, known, dropped)
        bundles = _apply_policy(bundles, problems, bad, bundles_name, policy, report.validation)
    return Dataset(items=items, events=events, bundles=bundles), report


def _check_events_left(
    rows: int, left: int, file: str, require_events: bool, collect_only: bool, report: LoadReport
) -> None:
    """An empty behaviour log is an error when events are required, else a warning; `data
    validate` lists a header-only log as a problem (a dropped-out one is listed row by row)."""
    if left > 0:
        return
    if collect_only:
        if rows == 0:
            report.validation.problems.append(Problem(file, None, None, _no_rows("events"), "no rows"))
        return
    message = f"{file}: {_no_rows('events')}" if rows == 0 else _all_dropped(file, "events", rows, report, cleaned=True)
    if require_events:
        raise DataError(message)
    report.warnings.append(message)


def load_catalog(path: str | Path) -> pl.DataFrame:
    """A catalog file alone (`recs build-index --items`): validated as a shop's, every problem an error."""
    path = Path(path)
    return catalog_from_raw(read_table(path), path.name)


def catalog_from_raw(raw: pl.DataFrame, file: str) -> pl.DataFrame:
    """Items as read (any types), validated as a catalog file's rows; `file` names where they
    came from in the errors (a file, a request body)."""
    _raise_for(missing_columns(raw, REQUIRED_COLUMNS["items"], file))
    if raw.height == 0:
        raise DataError(f"{file}: {_no_rows('items')}")
    items, problems, _ = validate_items(raw, file)
    _raise_for(problems)
    return items


def load_dataset(
    folder: str | Path, config: DataConfig | None = None, require_events: bool = True, report: LoadReport | None = None
) -> tuple[Dataset, LoadReport]:
    """A shop folder holds items.*, events.* and optionally bundles.* (csv, tsv, parquet or jsonl).
    `require_events=False`: the events file may be absent or empty (a warning)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found")
    return load_tables(
        find_table(folder, "items"),
        find_table(folder, "events", required=require_events),
        find_table(folder, "bundles", required=False),
        config=config,
        require_events=require_events,
        report=report,
    )
