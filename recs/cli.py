"""The `recs` command line. Known errors become one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from recs.config import DataConfig, OnBadRows
from recs.errors import ConfigError, RecsError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="recs: e-commerce recommendations.")
data_app = typer.Typer(no_args_is_help=True, help="Validate, profile and generate shop data.")
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """The one place known errors are mapped to a one-line message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RecsError as err:
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got '{text}'") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{option}: expected positive integers, got '{text}'")
    return values


def data_config(on_bad_rows: str, config_path: Path | None) -> DataConfig:
    base = DataConfig.from_toml(config_path, section="data") if config_path else DataConfig()
    return base.model_copy(update={"on_bad_rows": on_bad_rows})


OnBadRowsOption = Annotated[
    str, typer.Option("--on-bad-rows", help="error: stop at the first bad row; skip: drop bad rows and report them.")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML file with a [data] section.")]


@data_app.command("validate")
@handle_errors
def data_validate(
    items: Annotated[Path, typer.Argument(help="Items file (csv, tsv, parquet, jsonl).")],
    events: Annotated[Path | None, typer.Argument(help="Events file.")] = None,
    bundles: Annotated[Path | None, typer.Argument(help="Bundles file (optional).")] = None,
    max_problems: Annotated[int, typer.Option(help="How many problems to list.")] = 50,
    config: ConfigOption = None,
) -> None:
    """Check a shop's files and print a summary: counts, time span, basket sizes, problems."""
    from recs.data.load import load_tables
    from recs.data.summary import dataset_summary

    dataset, report = load_tables(items, events, bundles, config=data_config("skip", config), collect_only=True)
    for line in dataset_summary(dataset):
        console.print(line, highlight=False)
    problems = report.validation.problems
    if problems:
        console.print(f"\n[red]{len(problems)} problem(s):[/red]")
        for problem in problems[:max_problems]:
            console.print(f"  {problem}", highlight=False, soft_wrap=True)
        if len(problems) > max_problems:
            console.print(f"  ... and {len(problems) - max_problems} more")
        for (file, kind), n in sorted(report.validation.counts().items()):
            console.print(f"  {file}: {n} x {kind}", highlight=False)
    for line in report.cleaning.lines():
        console.print(f"cleaning: {line}", highlight=False)
    if problems:
        raise typer.Exit(2)
    console.print("[green]no problems found[/green]")


@data_app.command("profile")
@handle_errors
def data_profile(
    data: Annotated[Path, typer.Option("--data", help="Shop folder (items.*, events.*).")],
    user: Annotated[str, typer.Option("--user", help="User id.")],
    on_bad_rows: OnBadRowsOption = "error",
    config: ConfigOption = None,
) -> None:
    """Show a user's profile: top categories, price band, recency, frequency, basket size."""
    from recs.data.load import load_dataset
    from recs.data.profile import user_profile

    dataset, _ = load_dataset(data, data_config(on_bad_rows, config))
    profile = user_profile(dataset, user)
    table = Table(title=f"profile of user {user}", show_header=False)
    for key, value in profile.items():
        table.add_row(key, _fmt(value))
    console.print(table)


@data_app.command("demo")
@handle_errors
def data_demo(
    out: Annotated[Path, typer.Option("--out", help="Folder to write items.csv, events.csv, bundles.csv.")],
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    scale: Annotated[float, typer.Option(help="Size multiplier (100 = a shop 100x larger).")] = 1.0,
) -> None:
    """Generate the demo shop."""
    from recs.data.demo import write_demo_shop

    if scale <= 0:
        raise ConfigError(f"--scale must be positive, got {scale}")
    paths = write_demo_shop(out, seed=seed, scale=scale)
    for name, path in paths.items():
        console.print(f"wrote {name}: {path}", highlight=False)


@app.command("evaluate")
@handle_errors
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Shop folder.")],
    model: Annotated[str, typer.Option("--model", help="Comma-separated: popularity,repeat,cooc,als,bm25.")] = "popularity,repeat,cooc,als,bm25",
    k: Annotated[str, typer.Option("--k", help="Cut-offs, e.g. 10,50.")] = "10,50",
    out: Annotated[Path | None, typer.Option("--out", help="Write results JSON here (and .md beside it).")] = None,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Skip ALS hyper-parameter search.")] = False,
    on_bad_rows: OnBadRowsOption = "error",
    config: ConfigOption = None,
) -> None:
    """Evaluate baselines with the next-basket protocol (last basket of each user = test)."""
    from recs.data.load import load_dataset
    from recs.data.splits import leave_last_out
    from recs.evaluation.baselines import BASELINES
    from recs.evaluation.protocol import evaluate_baselines
    from recs.evaluation.report import format_table, write_results

    ks = parse_int_list(k, "--k")
    names = [m.strip() for m in model.split(",") if m.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"--model: unknown model(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    dataset, _ = load_dataset(data, data_config(on_bad_rows, config))
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    console.print(split.describe(), highlight=False)
    rows = evaluate_baselines(names, dataset.items, split, ks, tune_als=not no_tune)
    for row in rows:
        row.setdefault("dataset", data.name)
    metrics = [f"{m}@{kk}" for kk in ks for m in ("recall", "ndcg")]
    console.print(format_table(rows, metrics=metrics))
    if out is not None:
        json_path, md_path = write_results(out.stem, rows, out.parent)
        console.print(f"wrote {json_path} and {md_path}", highlight=False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, default=str).strip('"') if not isinstance(value, str) else value


def main() -> None:
    app()


if __name__ == "__main__":
    main()
