"""`recs data validate | profile | demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from recs.cli.common import (
    ConfigOption,
    OnBadRowsOption,
    SkipReportOption,
    console,
    data_app,
    data_config,
    fmt_value,
    handle_errors,
    load_shop,
    say,
)
from recs.errors import ConfigError


@data_app.command("validate")
@handle_errors
def data_validate(
    items: Annotated[Path, typer.Argument(help="Items file (csv, tsv, parquet, jsonl).")],
    events: Annotated[Path | None, typer.Argument(help="Events file.")] = None,
    bundles: Annotated[Path | None, typer.Argument(help="Bundles file (optional).")] = None,
    max_problems: Annotated[int, typer.Option(help="How many problems to list.")] = 50,
    config: ConfigOption = None,
) -> None:
    """Check a shop's files and print a summary: counts, time span, basket sizes, problems (each
    with what `--on-bad-rows skip` would do with it), warnings."""
    from recs.data.load import load_tables
    from recs.data.summary import dataset_summary

    dataset, report = load_tables(items, events, bundles, config=data_config("skip", config), collect_only=True)
    for line in dataset_summary(dataset):
        say(line)
    for line in report.warnings:
        say(f"warning: {line}")
    problems = report.validation.problems
    if problems:
        console.print(f"\n[red]{len(problems)} problem(s)[/red] (-> what --on-bad-rows skip does):")
        for problem in problems[:max_problems]:
            say(f"  {problem}" + (f" -> {problem.action}" if problem.row is not None else ""))
        if len(problems) > max_problems:
            console.print(f"  ... and {len(problems) - max_problems} more")
        for (file, kind), n in sorted(report.validation.counts().items()):
            say(f"  {file}: {n} x {kind}")
    for line in report.cleaning.lines():
        say(f"cleaning: {line}")
    if problems:
        raise typer.Exit(2)
    console.print("[green]no problems found[/green]")


@data_app.command("profile")
@handle_errors
def data_profile(
    data: Annotated[Path, typer.Option("--data", help="Shop folder (items.*, events.*).")],
    user: Annotated[str, typer.Option("--user", help="User id.")],
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Show a user's profile: top categories, price band, recency, frequency, basket size."""
    from recs.data.profile import user_profile

    dataset = load_shop(data, data_config(on_bad_rows, config, skip_report))
    profile = user_profile(dataset, user)
    table = Table(title=f"profile of user {user}", show_header=False)
    for key, value in profile.items():
        table.add_row(key, fmt_value(value))
    console.print(table)


@data_app.command("demo")
@handle_errors
def data_demo(
    out: Annotated[Path, typer.Option("--out", help="Folder to write items.csv, events.csv, bundles.csv.")],
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    scale: Annotated[float, typer.Option(help="Size multiplier (100 = a shop 100x larger).")] = 1.0,
    items_only: Annotated[bool, typer.Option("--items-only", help="Write the catalog (items.csv) alone: no users, events or bundles (large catalogs for index benchmarks).")] = False,
) -> None:
    """Generate the demo shop."""
    from recs.data.demo import write_demo_shop

    if scale <= 0:
        raise ConfigError(f"--scale must be positive, got {scale}")
    paths = write_demo_shop(out, seed=seed, scale=scale, items_only=items_only)
    for name, path in paths.items():
        console.print(f"wrote {name}: {path}", highlight=False)

