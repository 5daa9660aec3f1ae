"""The `recs` command line. Known errors become one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recs.config import HttpConfig, RecsConfig, load_config
from recs.configmodel import OnBadRows
from recs.data.config import DataConfig
from recs.errors import ArtifactError, ConfigError, DataError, RecsError

if TYPE_CHECKING:
    from recs.data.schema import Dataset

app = typer.Typer(no_args_is_help=True, add_completion=False, help="recs: e-commerce recommendations.")
data_app = typer.Typer(no_args_is_help=True, help="Validate, profile and generate shop data.")
app.add_typer(data_app, name="data")
config_app = typer.Typer(no_args_is_help=True, help="Show the configuration a model was trained with.")
app.add_typer(config_app, name="config")

# Tables are wide (titles, reasons): a pipe or a CI log gets 160 columns rather than rich's 80.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
F = TypeVar("F", bound=Callable[..., Any])


OS_ERROR_EXIT = 1  # a path that cannot be read or written: permissions, full disk, size limit


def handle_errors(func: F) -> F:
    """The one place known errors are mapped to a one-line message and an exit code. An OSError
    (a read-only folder, a full disk, a file-size limit, a path that exists) names its path."""
    from recs.io import describe_os_error

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except RecsError as err:
            # Messages quote the user's data: brackets in it are text, not rich markup.
            err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except OSError as err:
            err_console.print(f"[red]error:[/red] {describe_os_error(err)}", highlight=False, soft_wrap=True)
            raise typer.Exit(OS_ERROR_EXIT) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """A warning (e.g. the `warn` unknown-user policy's) as one line on stderr, not Python's two."""
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def writes_artifact(option: str, create: bool = False) -> Callable[[F], F]:
    """Hold the writer lock of the artifact named by `option` for the whole command, from its
    first read to its last save, after checking the target (`recs.artifacts.artifact_lock`;
    `create`: it may not exist yet)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from recs.artifacts import artifact_lock

            if create:  # a bad target is a bad option (exit 2), refused before the lock and any work
                check_output(kwargs[option], f"--{option}", "artifact")
            with artifact_lock(kwargs[option], create=create):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers, got '{text}'") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{option}: expected positive integers, got '{text}'")
    return values


def data_config(on_bad_rows: str | None, config_path: Path | None, skip_report: Path | None = None) -> DataConfig:
    """The [data] section of --config, with --on-bad-rows and --skip-report over it when given."""
    base = load_config(config_path).data
    if on_bad_rows is not None and on_bad_rows not in get_args(OnBadRows):
        raise ConfigError(f"--on-bad-rows must be error or skip, got '{on_bad_rows}'")
    updates = {"on_bad_rows": on_bad_rows, "skip_report": skip_report}
    updates = {key: value for key, value in updates.items() if value is not None}
    return DataConfig.parse_dict({**base.model_dump(), **updates}, source="command line") if updates else base


OutputKind = Literal["file", "folder", "artifact"]


def check_output(path: Path, option: str, kind: OutputKind) -> Path:
    """Refuse, before any data is loaded or any model trained, an output the command could not
    write: a file where a folder goes (or the reverse), an artifact over a folder of other files
    (the artifact's own rule), a path under a file, a folder we may not write in. A file or an
    artifact already there is replaced atomically when the command finishes."""
    from recs.artifacts import refuse_non_artifact_target

    if kind == "file" and path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file path")
    if kind == "folder" and (path.is_symlink() or (path.exists() and not path.is_dir())):
        raise ConfigError(f"{option} {path} is a file; this writes a folder of files, give a folder path")
    if kind == "artifact":
        try:
            refuse_non_artifact_target(path)
        except ArtifactError as err:
            raise ConfigError(f"{option}: {err}") from None
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # missing folders are created: the first existing one must be writable
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: no permission to write in {parent}")
    return path


def check_results_outputs(out: Path, suffixes: tuple[str, ...]) -> None:
    """A results --out: a .json file, with the files of `suffixes` written beside it."""
    if out.suffix != ".json":
        raise ConfigError(f"--out must be a .json file, got '{out}'")
    for suffix in suffixes:
        check_output(out.with_suffix(suffix), "--out", "file")


OnBadRowsOption = Annotated[
    str | None, typer.Option("--on-bad-rows", help="error: stop at the first bad row; skip: drop rows with a bad required field, "
                             "set bad optional values to null, and list them all (default: [data] on_bad_rows, error).")
]
SkipReportOption = Annotated[
    Path | None, typer.Option("--skip-report", help="CSV listing every row --on-bad-rows skip dropped or nulled, written only when "
                              "there is one (default: [data] skip_report, recs-skipped-rows.csv here).")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML file: [data] [retrieval] [ranking] [bundling] [serving] sections (RecsConfig).")]

def load_shop(data: Path, settings: DataConfig, require_events: bool = True) -> Dataset:
    """The one way a command loads a shop folder: under `skip` it prints what was dropped or set to
    null (also when nothing usable is left) and writes the skip report."""
    from recs.data.load import LoadReport, load_dataset

    report = LoadReport()
    try:
        dataset, _ = load_dataset(data, settings, require_events=require_events, report=report)
    except DataError:
        if settings.on_bad_rows == "skip":
            report.publish(settings.skip_report, say)
        raise
    report.publish(settings.skip_report, say)
    return dataset


def say(line: str) -> None:
    """Print a line that may hold text from the user's files: no rich markup, no highlighting."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


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
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Skip the validation search of als, tifu_knn and upcf.")] = False,
    artifact: Annotated[Path | None, typer.Option("--artifact", help="Also evaluate this trained model (two_tower and candidates).")] = None,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Evaluate baselines (and a trained model) with the next-basket protocol (last basket = test).

    A model from `recs train` held each user's last basket out of training (it was its validation
    set), so its figures here are on baskets it never trained on."""
    from recs.data.requirements import require_held_out, require_items
    from recs.data.splits import leave_last_out
    from recs.evaluation.baselines import BASELINES
    from recs.evaluation.report import format_table, write_results
    from recs.evaluation.runner import evaluate_baselines

    ks = parse_int_list(k, "--k")
    names = [m.strip() for m in model.split(",") if m.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"--model: unknown model(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if not names:
        raise ConfigError(f"--model: no model given; choose from {', '.join(BASELINES)}")
    if out is not None:
        check_results_outputs(out, (".json", ".md"))
    settings = data_config(on_bad_rows, config, skip_report)
    engine = None
    if artifact is not None:
        from recs.serving.engine import Engine

        engine = Engine.load(artifact)  # a bad artifact is refused before any work
    dataset = load_shop(data, settings)
    require_items(dataset.items, "recs evaluate")
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    require_held_out(split, "recs evaluate")
    console.print(split.describe(), highlight=False)
    rows = evaluate_baselines(names, dataset.items, split, ks, tune=not no_tune, dataset=data.name)
    if engine is not None:
        rows += evaluate_artifact(engine, artifact, dataset.items, split, ks, data.name)
    for row in rows:
        row.setdefault("dataset", data.name)
    metrics = [f"{m}@{kk}" for kk in ks for m in ("recall", "ndcg")]
    console.print(format_table(rows, metrics=metrics))
    if out is not None:
        json_path, md_path = write_results(out.stem, rows, out.parent)
        console.print(f"wrote {json_path} and {md_path}", highlight=False)


@app.command("benchmark")
@handle_errors
def benchmark(
    data: Annotated[Path, typer.Option("--data", help="Shop folder (items.*, events.*).")],
    out: Annotated[Path, typer.Option("--out", help="Results JSON; the .md table and the .png plot are written beside it.")] = Path("benchmark.json"),
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Overall training budget: half for the towers, a quarter for the cross-encoder (default: the config's limits).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Backbone: local Hugging Face BERT folder (default: [retrieval.towers] model, all-MiniLM-L6-v2 offline).")] = None,
    max_test_users: Annotated[int | None, typer.Option("--max-test-users", help="Score a seeded sample of N test users (default: all).")] = None,
    baselines: Annotated[str | None, typer.Option("--baselines", help="Comma-separated baselines (default: every registered one).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """The held-out protocol on a shop's own data: towers on the tune split, the ranking stage on
    each user's validation basket, then the engine, the two-tower and every baseline on the test
    baskets, with paired per-user comparisons (engine vs each baseline, 95% CI)."""
    from recs.evaluation.report import format_table, plot_metrics, write_results
    from recs.evaluation.shop_benchmark import PAIRED_METRIC, TABLE_METRICS, run_shop_benchmark
    from recs.io import remove_tree, work_dir_of, write_lock

    if max_test_users is not None and max_test_users < 1:
        raise ConfigError(f"--max-test-users must be positive, got {max_test_users}")
    if max_minutes is not None and not max_minutes > 0:  # NaN too
        raise ConfigError(f"--max-minutes must be positive, got {max_minutes}")
    check_results_outputs(out, (".json", ".md", ".png"))
    settings = load_config(config)
    if model is not None:
        towers = settings.retrieval.towers.model_copy(update={"model": model})
        settings = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update={"towers": towers})})
    names = [b.strip() for b in baselines.split(",") if b.strip()] if baselines else None
    dataset = load_shop(data, data_config(on_bad_rows, config, skip_report))
    name = data.resolve().name or "shop"
    # Scratch beside --out (not the system temp folder), so that the next run finds and removes
    # what a killed one left; the lock keeps two runs from sharing it. Checkpoints of this run
    # only: a trainer resuming from an earlier run's would skew the result.
    with write_lock(out):
        work = work_dir_of(out)
        try:
            result = run_shop_benchmark(
                dataset, settings, work, max_minutes, names, show_progress=not no_progress, name=name,
                max_test_users=max_test_users, log=lambda line: console.print(line, highlight=False),
            )
        finally:
            remove_tree(work)
    console.print(format_table(result.rows, metrics=TABLE_METRICS), highlight=False)
    paired = result.paired_lines()
    console.print(f"paired per-user {PAIRED_METRIC} on `all` (engine at default R = {result.default_rerank_top}):", highlight=False)
    for line in paired:
        console.print("  " + line, highlight=False)
    extra = {"paired": result.paired, "protocol": {"split": result.split, "default_rerank_top": result.default_rerank_top,
                                                   "max_minutes": max_minutes, "seconds": round(result.seconds, 1)}}
    json_path, md_path = write_results(out.stem, result.rows, out.parent, extra=extra,
                                       sections={f"Paired per-user {PAIRED_METRIC}, slice all": paired})
    png = plot_metrics(result.rows, out.with_suffix(".png"), metric=PAIRED_METRIC)
    console.print(f"benchmark took {result.seconds:.0f}s; wrote {json_path}, {md_path}, {png}", highlight=False)


@app.command("train")
@handle_errors
@writes_artifact("out", create=True)
def train(
    out: Annotated[Path, typer.Option("--out", help="Artifact folder to write (an artifact there is replaced atomically; a file or a folder of other files is refused before training).")],
    data: Annotated[Path | None, typer.Option("--data", help="Shop folder (items.*, events.*); with --resume-from, its events after the model's log are the new ones.")] = None,
    resume_from: Annotated[Path | None, typer.Option("--resume-from", help="Continue this torch artifact's fine-tuning on the events after its log (from --data or --events) and write a full new artifact to --out (may be the same folder).")] = None,
    events: Annotated[str | None, typer.Option("--events", help="With --resume-from: the event store holding the new events (SQLite file or postgresql:// DSN); the catalog stays the model's.")] = None,
    replay: Annotated[float, typer.Option("--replay", help="With --resume-from: pairs from before the new events replayed per new pair, so that the towers do not forget (0: none).")] = 0.5,
    model: Annotated[str | None, typer.Option("--model", help="Local Hugging Face BERT folder (default: [retrieval.towers] model, all-MiniLM-L6-v2 offline).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    max_pairs: Annotated[int | None, typer.Option("--max-pairs", help="Training pairs sampled per epoch.")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop training after this long.")] = None,
    train_layers: Annotated[int | None, typer.Option("--train-layers", help="Fine-tune only the top N layers (-1: all).")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Fine-tune with LoRA adapters (peft).")] = False,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate of the backbone layers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the config's, 0).")] = None,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Fine-tune the user and item towers on a shop and save the artifact (towers, vectors, index).
    Flags override the [retrieval] section of --config. The options and --out are checked before
    the data is read; an artifact already at --out is replaced atomically at the end.
    With --resume-from ART: continue ART's fine-tuning on the new events (see README)."""
    from recs.data.requirements import require_items
    from recs.serving.fit import train_towers_step

    train_updates: dict[str, Any] = {} if seed is None else {"seed": seed}
    if lr is not None:
        train_updates["lr"] = lr
    if epochs is not None:
        train_updates["epochs"] = epochs
    if max_pairs is not None:
        train_updates["max_pairs_per_epoch"] = max_pairs
    if max_minutes is not None:
        train_updates["max_minutes"] = max_minutes
    if train_layers is not None:
        train_updates["train_layers"] = None if train_layers < 0 else train_layers
    if lora:
        train_updates["lora"] = True
    if resume_from is not None:
        if model is not None:
            raise ConfigError("--model: with --resume-from the towers are the artifact's; leave --model out")
        _resume_training(resume_from, out, data, events, replay, train_updates, on_bad_rows, skip_report, config)
        return
    if data is None or events is not None:
        raise ConfigError("give --data SHOP (--events is for --resume-from)")
    settings = load_config(config)
    base = settings.retrieval
    towers = base.towers.model_dump() if model is None else {**base.towers.model_dump(), "model": model}
    retrieval = type(base).parse_dict(
        {**base.model_dump(), "towers": towers, "train": {**base.train.model_dump(), **train_updates}}, source="recs train"
    )
    settings = settings.model_copy(update={"retrieval": retrieval, "data": data_config(on_bad_rows, config, skip_report)})
    check_output(out, "--out", "artifact")
    dataset = load_shop(data, settings.data)
    require_items(dataset.items, "recs train")
    console.print(f"training on {dataset.events.height} events, {dataset.items.height} items, model {retrieval.towers.model}", highlight=False)
    retriever = train_towers_step(dataset, settings, out)
    _print_train_report(retriever)
    console.print(f"saved {out}", highlight=False)


def _print_train_report(retriever: Any) -> None:
    rep = retriever.report
    if rep is not None and rep.history:
        best = next((h for h in rep.history if h.get("epoch") == rep.best_epoch), rep.history[-1])
        if "ndcg@10" in best:
            scored = (f"best epoch {rep.best_epoch}: recall@10 {best.get('recall@10', 0):.4f}, ndcg@10 {best['ndcg@10']:.4f} "
                      "(validation: last basket)")
        else:
            new = " holds an item new to the user" if retriever.config.train.positives == "new_to_user" else " follows earlier events"
            scored = f"no validation users (no user's last purchase basket{new}): the last epoch ({rep.best_epoch}) is kept"
        console.print(f"trained {rep.steps} steps in {rep.seconds:.0f}s on {rep.pairs} pairs; {scored}", highlight=False)


def _resume_training(
    start_path: Path, out: Path, data: Path | None, store: str | None, replay: float, train_updates: dict[str, Any],
    on_bad_rows: str | None, skip_report: Path | None, config_path: Path | None,
) -> None:
    """`recs train --resume-from`: the logic is recs/serving/resume.py's."""
    from recs.serving.resume import (
        check_replay,
        load_start,
        resume_settings,
        resume_step,
        shop_log,
        store_log,
    )

    if (data is None) == (store is None):
        raise ConfigError("--resume-from needs the new events: give --data SHOP or --events STORE (one of them)")
    check_replay(replay)
    artifact, start = load_start(start_path)
    settings = resume_settings(artifact, start, load_config(config_path) if config_path is not None else None, train_updates)
    if config_path is not None or on_bad_rows is not None or skip_report is not None:
        settings = settings.model_copy(update={"data": data_config(on_bad_rows, config_path, skip_report)})
    if data is not None:
        dataset = load_shop(data, settings.data)
        log = shop_log(start, dataset.events)
        retriever, report = resume_step(artifact, start, log, settings, out, items=dataset.items, bundles=dataset.bundles,
                                        replay=replay)
    else:
        from recs.serving.eventstore import open_store

        if not store.startswith(("postgresql://", "postgres://")) and not Path(store).is_file():  # type: ignore[union-attr]
            raise ConfigError(f"--events {store}: no event store there (a SQLite file, or a postgresql:// DSN)")
        events = open_store(store)  # type: ignore[arg-type]
        try:
            retriever, report = resume_step(artifact, start, store_log(start, events), settings, out, replay=replay, store=events)
        finally:
            events.close()
    ignored = f" ({report.ignored_events} already in its log or of unknown items left out)" if report.ignored_events else ""
    console.print(f"resumed {start_path} (its log ends {report.log_end}) on {report.new_events} new events of "
                  f"{report.new_users} user(s){ignored}, {report.new_items} new item(s)", highlight=False)
    console.print(f"training pairs: {report.new_pairs} new + {report.replayed_pairs} replayed", highlight=False)
    _print_train_report(retriever)
    if retriever.report is not None and retriever.report.best_epoch == 0:
        print_warning(f"no epoch beat the starting weights on validation: the towers stay those of {start_path} "
                      "(the catalog's vectors, index, log and statistics are new)")
    for part in report.retrained:
        console.print(f"retrained the {part} on the new towers", highlight=False)
    console.print(f"saved {out}", highlight=False)


@app.command("build-index")
@handle_errors
@writes_artifact("model")
def build_index(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder from `recs train`.")],
    items: Annotated[Path | None, typer.Option("--items", help="A new catalog file to encode (default: the trained one).")] = None,
    kind: Annotated[str, typer.Option("--kind", help="auto | flat | hnsw | ivfpq")] = "auto",
) -> None:
    """Encode the catalog with the item tower and (re)build the FAISS index inside the artifact."""
    from recs.data.load import load_catalog
    from recs.retrieval.retriever import Retriever

    if kind not in ("auto", "flat", "hnsw", "ivfpq"):
        raise ConfigError(f"--kind must be auto, flat, hnsw or ivfpq, got '{kind}'")
    catalog = None if items is None else load_catalog(items)  # a bad file fails before the model loads
    retriever = Retriever.load(model)
    retriever = retriever.with_catalog(items=catalog, kind=kind, show_progress=True)
    retriever.save(model)
    console.print(f"indexed {len(retriever.catalog)} items ({retriever.index!r}) into {model}", highlight=False)


@app.command("query")
@handle_errors
def query(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder.")],
    user: Annotated[str | None, typer.Option("--user", help="User id.")] = None,
    k: Annotated[int, typer.Option("--k", help="How many items.")] = 10,
    category: Annotated[str | None, typer.Option("--category", help="Only this category (or below).")] = None,
    in_stock: Annotated[bool, typer.Option("--in-stock", help="Only items in stock.")] = False,
    exclude_bought: Annotated[bool, typer.Option("--exclude-bought", help="Leave out items the user bought.")] = False,
    history: Annotated[str | None, typer.Option("--history", help="Item ids ID,ID,... for someone not in the data.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="A session or search query as the user tower's input.")] = None,
    unknown_user: Annotated[str, typer.Option("--unknown-user", help="raise | warn | fallback (popularity).")] = "fallback",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    show_history: Annotated[bool, typer.Option("--show-history", help="Also print the user's recent history.")] = False,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip the cross-encoder: the learned ranker's order.")] = False,
    rerank_top: Annotated[int | None, typer.Option("--rerank-top", help="How many top items the cross-encoder rescores.")] = None,
    diversity: Annotated[float, typer.Option("--diversity", help="0..1: maximal-marginal-relevance diversity (0 = off).")] = 0.0,
    category_cap: Annotated[int | None, typer.Option("--category-cap", help="At most N items per category.")] = None,
    novelty: Annotated[bool, typer.Option("--novelty", help="Only items new to the user (a 'discover' shelf).")] = False,
    price_min: Annotated[float | None, typer.Option("--price-min", help="Lowest price.")] = None,
    price_max: Annotated[float | None, typer.Option("--price-max", help="Highest price.")] = None,
    exclude: Annotated[str | None, typer.Option("--exclude", help="Item ids to leave out, ID,ID,...")] = None,
    time_budget_ms: Annotated[float | None, typer.Option("--time-budget-ms", help="The request's time budget: past it the cross-encoder is skipped (degraded). Default: the model's.")] = None,
    config: ConfigOption = None,
) -> None:
    """Recommend items for a user (or a history / a text) and print them. The [serving] section of
    --config sets the ONNX runtime (precision, threads)."""
    from recs.serving.engine import Engine
    from recs.serving.requests import check_policy

    check_policy(unknown_user, "--unknown-user")
    if user is None and not history and not text:
        raise ConfigError("give --user, --history or --text")
    engine = Engine.load(model, runtime=_runtime(config))
    items_history = [h.strip() for h in history.split(",") if h.strip()] if history else None
    overrides: dict[str, Any] = {"rerank": not no_rerank, "diversity": diversity, "novelty": novelty}
    if rerank_top is not None:
        overrides["rerank_top"] = rerank_top
    if category_cap is not None:
        overrides["category_cap"] = category_cap
    if time_budget_ms is not None:
        overrides["time_budget_ms"] = time_budget_ms
    excluded = [e.strip() for e in exclude.split(",") if e.strip()] if exclude else []
    results = engine.recommend(
        user_id=user, k=k, history=items_history, text=text, category=category, price_min=price_min,
        price_max=price_max, in_stock=in_stock,
        exclude_bought=exclude_bought, exclude=excluded, unknown_user=unknown_user,  # type: ignore[arg-type]
        **overrides,
    )
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in results]))
        if results.degraded:  # stdout stays JSON
            err_console.print("note: degraded: the cross-encoder missed the time budget; the ranker's order is served", highlight=False)
        return
    if not results:
        console.print("no item matches the filters (category, price, stock, exclusions) of this request", highlight=False)
        return
    if show_history and user is not None and engine.retriever.known_user(user):
        console.print(f"[bold]recent history of {user}:[/bold] {engine.retriever.context(user_id=user).state.text[:300]}", highlight=False)
    flag = " [yellow](degraded: cross-encoder over its time budget)[/yellow]" if results.degraded else ""
    table = Table(title=f"recommendations for {user or 'the given history/text'}{flag}")
    for column in ("rank", "item id", "title", "price", "score", "source", "reason"):
        table.add_column(column, justify="right" if column in ("rank", "price", "score") else "left")
    for r in results:
        table.add_row(str(r.rank), r.item_id, r.title[:50], "" if r.price is None else f"{r.price:.2f}", f"{r.score:.4f}", r.source, r.reason)
    console.print(table)


@app.command("serve")
@handle_errors
def serve_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder: an ONNX export (no torch) or a trained one.")],
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default 127.0.0.1: this machine only).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes, each with its own copy of the model (default 1).")] = None,
    events: Annotated[str | None, typer.Option("--events", help="Event store: a SQLite file, a postgresql:// DSN, 'auto' (MODEL.events.sqlite beside the model; the default) or 'off'.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Reload when the model folder gets a new version (recs refresh, items upsert, export onto it).")] = False,
    config: ConfigOption = None,
) -> None:
    """Serve the model over HTTP (FastAPI + uvicorn): /recommend, /bundle, /events, /items/{id},
    /ready, /metrics, DELETE /users/{id} and /admin/reload (token in RECS_ADMIN_TOKEN), docs at
    /docs. [serving.http] in --config sets the limits; the options here override it."""
    from recs.serving.serve import serve

    serving = load_config(config).serving
    given = {"host": host, "port": port, "workers": workers, "events": events, "watch": watch or None}
    http = HttpConfig.parse_dict({**serving.http.model_dump(), **{k: v for k, v in given.items() if v is not None}},
                                 source="--host/--port/--workers/--events")
    serve(model, serving.model_copy(update={"http": http}))


@app.command("refresh")
@handle_errors
def refresh_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder (torch, or an ONNX export: statistics only), rewritten as a new version.")],
    events: Annotated[str, typer.Option("--events", help="The event store: a SQLite file (e.g. MODEL.events.sqlite) or a postgresql:// DSN.")],
    statistics_only: Annotated[bool, typer.Option("--statistics-only", help="Refit the statistics only; keep the rankers.")] = False,
) -> None:
    """Fold the event store into the model: statistics (popularity, co-purchase, ALS, neighbours),
    set-scorer counts and rankers refitted on the log + the store's new events, without the users
    forgotten since. `POST /admin/reload` (or the service's --watch) then serves it."""
    from recs.artifacts import open_artifact
    from recs.serving.eventstore import open_store
    from recs.serving.refresh import refresh

    open_artifact(model)  # a model that is not there, or not an artifact, is refused as such
    check_output(model, "--model", "artifact")
    report = refresh(model, open_store(events), retrain_rankers=not statistics_only)
    console.print(f"refreshed {model}: {report.events} events ({report.added} new from the store), "
                  f"{report.forgotten_users} users forgotten ({report.forgotten_events} of their events dropped); "
                  f"refitted {', '.join(report.refitted)}", highlight=False)


@app.command("forget")
@handle_errors
def forget_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder, rewritten without the user.")],
    user: Annotated[str, typer.Option("--user", help="The user id to forget.")],
    events: Annotated[str | None, typer.Option("--events", help="The event store to delete their events from (default: MODEL.events.sqlite beside the model, when it exists).")] = None,
) -> None:
    """Forget a user: their events leave the event store and the model (log, ALS factors,
    neighbours, counts are refitted without them); an audit row records that it happened, not
    whose. Reload the service (or export again) so that it serves the new version."""
    from recs.artifacts import open_artifact
    from recs.serving.eventstore import default_store_path, open_store
    from recs.serving.refresh import forget_user

    open_artifact(model)
    check_output(model, "--model", "artifact")
    beside = default_store_path(model)
    store = open_store(events) if events is not None else open_store(beside) if beside.exists() else None
    report = forget_user(model, user, store)
    where = f" and {report.store_events_removed} from the event store {store.spec}" if store is not None else ""
    console.print(f"forgot a user: {report.forgotten_events} events removed from {model}{where}; "
                  f"refitted {', '.join(report.refitted)}", highlight=False)


@app.command("export")
@handle_errors
def export_command(
    model: Annotated[Path, typer.Option("--model", help="Trained artifact folder (towers, and the ranking stage if trained).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the ONNX serving artifact (replaced atomically).")],
    int8: Annotated[bool, typer.Option("--int8", help="Also write dynamically quantised int8 graphs.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the parity checks against torch.")] = False,
) -> None:
    """Export towers, cross-encoder and rankers to ONNX: a folder served without torch."""
    from recs.export import export_artifact

    check_output(out, "--out", "artifact")
    result = export_artifact(model, out, int8=int8, check=not no_check)
    table = Table(title=f"ONNX export {out}")
    for column in ("graph", "fp32 MB", "int8 MB", "parity"):
        table.add_column(column, justify="left" if column in ("graph", "parity") else "right")
    for name, sizes in result.sizes().items():
        table.add_row(name, f"{sizes['fp32'] / 1e6:.1f}", f"{sizes['int8'] / 1e6:.1f}" if "int8" in sizes else "", _parity_text(result.parity.get(name)))
    console.print(table)
    for note in result.skipped:
        console.print(f"not exported: {note}", highlight=False)
    console.print(f"saved {out} (serve it with `recs query --model {out}`; torch is not needed)", highlight=False)


def _parity_text(parity: dict[str, Any] | None) -> str:
    if not parity:
        return ""
    if "max_abs_diff" in parity and "rows" in parity:
        return f"max |diff| {parity['max_abs_diff']:.1e} over {parity['rows']} rows"
    parts = []
    for precision, p in parity.items():
        if not isinstance(p, dict):  # a flat report (e.g. the set scorer's): key = value
            parts.append(f"{precision} {p:.1e}" if isinstance(p, float) else f"{precision} {p}")
            continue
        if "min_cosine" in p:
            parts.append(f"{precision} cos >= {p['min_cosine']:.4f}")
        elif "max_abs_diff" in p:
            parts.append(f"{precision} max |diff| {p['max_abs_diff']:.1e}")
    return "; ".join(parts)


@app.command("export-vectors")
@handle_errors
def export_vectors_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder (trained or exported).")],
    to: Annotated[str, typer.Option("--to", help="parquet | npy | pgvector | opensearch | elasticsearch")],
    out: Annotated[Path | None, typer.Option("--out", help="File (parquet) or folder (npy, opensearch, elasticsearch); files already there are replaced atomically, other files in the folder are left alone.")] = None,
    dsn: Annotated[str | None, typer.Option("--dsn", help="pgvector: libpq connection string or postgresql:// URI.")] = None,
    table: Annotated[str, typer.Option("--table", help="pgvector: table name (NAME or SCHEMA.NAME).")] = "recs_items",
    index: Annotated[str, typer.Option("--index", help="opensearch/elasticsearch: index name in the bulk file.")] = "recs-items",
    fields: Annotated[str | None, typer.Option("--fields", help="Item fields to carry, F,F,... (default: all).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="pgvector: drop the table first if it exists.")] = False,
) -> None:
    """Write item vectors + fields for a search backend (Parquet/NPY, pgvector, OpenSearch/Elasticsearch)."""
    from recs.export.backends import BACKENDS, export_search_index

    if out is not None and to in BACKENDS and to != "pgvector":
        check_output(out, "--out", "file" if to == "parquet" else "folder")
    chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    report = export_search_index(model, to, out=out, dsn=dsn, table=table, index=index, fields=chosen, replace=replace)
    where = report.get("table") or report.get("files")
    console.print(f"exported {report['items']} item vectors (dim {report['dim']}) to {to}: {_fmt(where)}", highlight=False)
    if "query" in report:
        console.print("top-k query (see README):\n" + report["query"], highlight=False)


@app.command("train-bundler")
@handle_errors
@writes_artifact("model")
def train_bundler_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder from `recs train` (updated in place, atomically).")],
    data: Annotated[Path, typer.Option("--data", help="Shop folder: baskets from events.* and/or curated bundles from bundles.*.")],
    epochs: Annotated[int, typer.Option(help="Most training epochs (early stopping on validation).")] = 30,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop training after this long.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Train the set scorer (what goes together) on orders, sessions and curated bundles.
    Flags override the [bundling.train] section of --config."""
    from recs.serving.fit import train_bundler_step

    retriever = _load_model_to_update(model)
    settings = _model_config(model, config)
    bundling = settings.bundling
    train_cfg = type(bundling.train).parse_dict(
        {**bundling.train.model_dump(), "epochs": epochs, "max_minutes": max_minutes, "seed": seed}, source="train-bundler")
    settings = settings.model_copy(update={"bundling": bundling.model_copy(update={"train": train_cfg})})
    dataset = load_shop(data, data_config(on_bad_rows, config, skip_report), require_events=False)
    bundler = train_bundler_step(retriever, dataset, settings, model)
    rep = bundler.report
    sets = ", ".join(f"{n} {kind}s" for kind, n in sorted(rep.get("sets", {}).items()))
    best = next((h for h in rep.get("history", []) if h.get("epoch") == rep.get("best_epoch")), {})
    aucs = ", ".join(f"{k.removeprefix('auc_')} {v:.3f}" for k, v in best.items() if k.startswith("auc_") and isinstance(v, float))
    console.print(f"set scorer trained on {sets} in {rep.get('seconds', 0):.0f}s; best epoch {rep.get('best_epoch')}: validation AUC vs {aucs}", highlight=False)
    console.print(f"saved set scorer into {model}", highlight=False)


def parse_size(text: str) -> tuple[int, int]:
    """'2-4' -> (2, 4); '3' -> (3, 3)."""
    parts = [p.strip() for p in text.split("-")]
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
    except ValueError:
        low, high = 0, -1
    if len(parts) > 2 or low < 1 or high < low:
        raise ConfigError(f"--size: expected MIN-MAX with 1 <= MIN <= MAX (e.g. 2-4), got '{text}'")
    return low, high


@app.command("bundle")
@handle_errors
def bundle_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder with a set scorer (`recs train-bundler`).")],
    user: Annotated[str | None, typer.Option("--user", help="User id: bundles for this user.")] = None,
    item: Annotated[str | None, typer.Option("--item", help="Anchor item id: bundles around it.")] = None,
    items: Annotated[str | None, typer.Option("--items", help="Anchor item ids ID,ID,...: all in every bundle.")] = None,
    size: Annotated[str, typer.Option("--size", help="Items per bundle, MIN-MAX.")] = "2-4",
    budget: Annotated[float | None, typer.Option("--budget", help="Highest total price.")] = None,
    n: Annotated[int, typer.Option("--n", help="How many distinct bundles.")] = 3,
    exclude: Annotated[str | None, typer.Option("--exclude", help="Item ids to leave out, ID,ID,...")] = None,
    allow_same_leaf: Annotated[str | None, typer.Option("--allow-same-leaf", help="Leaf categories that may repeat (full paths, comma-separated; * = any).")] = None,
    include_out_of_stock: Annotated[bool, typer.Option("--include-out-of-stock", help="Allow items that are out of stock.")] = False,
    curated: Annotated[bool, typer.Option("--curated", help="Rank the curated bundles for --user instead of composing new ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    config: ConfigOption = None,
) -> None:
    """Compose complementary bundles for a user and/or around anchor items, under constraints."""
    from recs.data import category as category_rule
    from recs.serving.engine import Engine
    from recs.serving.requests import check_positive_int

    anchors = ([item] if item else []) + ([i.strip() for i in items.split(",") if i.strip()] if items else [])
    if user is None and not anchors:
        raise ConfigError("give --user, --item or --items")
    check_positive_int(n, "--n")
    low, high = parse_size(size)
    engine = Engine.load(model, runtime=_runtime(config))
    if curated:
        ranked = engine.rank_bundles(user, k=n)
        if as_json:
            console.print_json(json.dumps([r.to_dict() for r in ranked]))
            return
        table = Table(title=f"curated bundles for {user or 'anyone'}")
        for column in ("rank", "bundle", "title", "score", "items"):
            table.add_column(column, justify="right" if column in ("rank", "score") else "left")
        for r in ranked:
            table.add_row(str(r.rank), r.bundle_id, r.title[:40], f"{r.score:.3f}", "; ".join(t[:30] for t in r.titles))
        console.print(table)
        return
    bundles = engine.bundle(
        user, items=anchors, size=(low, high), budget=budget, n=n, in_stock=not include_out_of_stock,
        exclude=[e.strip() for e in exclude.split(",") if e.strip()] if exclude else None,
        allow_same_leaf=[a.strip() for a in allow_same_leaf.split(",") if a.strip()] if allow_same_leaf else None,
    )
    if as_json:
        console.print_json(json.dumps({"bundles": [b.to_dict() for b in bundles], "reason": bundles.reason}))
        return
    if not bundles:
        console.print(f"no bundle: {bundles.reason}", highlight=False)
        return
    for b in bundles:
        price = "unknown" if b.total_price is None else f"{b.total_price:.2f}"
        pref = "" if b.user_preference is None else f", P(user buys) {b.user_preference:.3f}"
        table = Table(title=f"bundle {b.rank}: total {price}, score {b.score:.3f}, P(real set) {b.set_score:.3f}{pref}")
        for column in ("item id", "title", "price", "category", "why"):
            table.add_column(column, justify="right" if column == "price" else "left")
        for i in b.items:
            table.add_row(i.item_id, i.title[:50], "" if i.price is None else f"{i.price:.2f}", category_rule.leaf(i.category), i.reason)
        console.print(table)


@app.command("train-ranker")
@handle_errors
@writes_artifact("model")
def train_ranker_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder from `recs train` (updated in place, atomically).")],
    data: Annotated[Path, typer.Option("--data", help="The shop folder the towers were trained on.")],
    no_ranker: Annotated[bool, typer.Option("--no-ranker", help="Train no learned ranker (nor discover ranker); existing ones are removed, with a warning.")] = False,
    no_cross_encoder: Annotated[bool, typer.Option("--no-cross-encoder", help="Train no cross-encoder; an existing one is removed, with a warning (it was a residual on the old ranker's scores).")] = False,
    rerank_top: Annotated[int | None, typer.Option("--rerank-top", help="Default R: top items the cross-encoder rescores (default: chosen on held-out users; 0 when reranking does not help).")] = None,
    ce_epochs: Annotated[int, typer.Option("--ce-epochs", help="Cross-encoder epochs.")] = 2,
    ce_max_minutes: Annotated[float | None, typer.Option("--ce-max-minutes", help="Stop cross-encoder training after this long.")] = None,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Train the ranking stage (learned ranker, discover ranker, cross-encoder) on each user's last
    basket (held out from the towers). It replaces the model's whole ranking stage: a part a --no-*
    flag leaves out, or one the data cannot train, is removed and a warning says so.
    Flags override the [ranking] section of --config."""
    from recs.serving.fit import train_ranking_step

    retriever = _load_model_to_update(model)
    settings = _model_config(model, config)
    ranking = settings.ranking
    cross = ranking.cross_encoder.model_copy(update={"epochs": ce_epochs, "max_minutes": ce_max_minutes})
    ranking = type(ranking).parse_dict(
        {**ranking.model_dump(), "train_ranker": not no_ranker, "train_cross_encoder": not no_cross_encoder,
         "cross_encoder": cross.model_dump()}, source="train-ranker")
    if rerank_top is not None:  # RankOptions' own rule, checked before any work
        type(settings.serving.options).parse_dict({**settings.serving.options.model_dump(), "rerank_top": rerank_top},
                                                  source="--rerank-top")
    settings = settings.model_copy(update={"ranking": ranking})
    dataset = load_shop(data, data_config(on_bad_rows, config, skip_report))
    models, options = train_ranking_step(retriever, dataset, settings, model, rerank_top=rerank_top)
    decision = models.report.get("rerank_decision")
    report = models.report
    if "ranker" in report:
        valid = report["ranker"].get("valid_ndcg@10", float("nan"))
        scored = f"validation ndcg@10 {valid:.4f}" if valid == valid else "no validation (too few queries to hold some out)"
        console.print(f"ranker: {report.get('queries_with_positive', 0)}/{report.get('queries', 0)} training queries with a "
                      f"positive among their candidates; {scored}", highlight=False)
    if "discover" in report:
        console.print(f"discover ranker (--novelty shelf): validation AUC {report['discover'].get('valid_auc', float('nan')):.4f}",
                      highlight=False)
    if models.cross_encoder is not None and models.cross_encoder.report is not None:
        ce = models.cross_encoder.report
        ranker_alone = next((h["valid_ndcg@10"] for h in ce.history if h.get("epoch") == 0), float("nan"))
        console.print(f"cross-encoder: {ce.steps} steps in {ce.seconds:.0f}s, validation ndcg@10 of its lists "
                      f"{ce.best_metric:.4f} (ranker alone {ranker_alone:.4f})", highlight=False)
    if decision is not None and "ndcg@10_first_stage" in decision:
        tried = ", ".join(f"R={k.rsplit('_', 1)[1]} {v:.4f}" for k, v in decision.items() if k.startswith("ndcg@10_rerank_"))
        console.print(
            f"held-out users ({decision['queries']}): ndcg@10 ranker {decision['ndcg@10_first_stage']:.4f}, reranked {tried}",
            highlight=False,
        )
    if models.cross_encoder is not None:
        console.print(
            f"default R = {options.rerank_top}" + (" (reranking off by default: the cross-encoder did not add NDCG; "
                                                  "`recs query --rerank-top R` turns it on)" if options.rerank_top == 0 else ""),
            highlight=False,
        )
    if "cross_encoder_skipped" in report:
        print_warning(f"cross-encoder not trained: it {report['cross_encoder_skipped']}")
    for name in report.get("removed", []):
        hint = "; train-ranker without --no-cross-encoder trains a new one" if name == "cross_encoder" and no_cross_encoder else ""
        print_warning(f"removed the existing {REMOVED_WHY.get(name, name)}{hint}")
    console.print(f"saved ranking stage into {model}", highlight=False)


# Why train-ranker removes a ranking component it did not train (see `save_ranking`).
REMOVED_WHY: dict[str, str] = {
    "ranker": "learned ranker (--no-ranker): the first stage is now the candidates' retrieval order",
    "discover": "discover ranker (none was trained this time): the --novelty shelf uses the first stage's order",
    "cross_encoder": "cross-encoder (it was trained on the old ranker's scores, which this run replaced)",
    "stage2": "second-stage ranker of an older recs (no longer used)",
}


def print_warning(message: str) -> None:
    """A warning the user must see: one line on stderr."""
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _runtime(config_path: Path | None) -> Any:
    """The ONNX runtime settings of --config's [serving] section (None: environment defaults)."""
    if config_path is None:
        return None
    from recs.serving.onnx_runtime import RuntimeOptions

    serving = load_config(config_path).serving
    return RuntimeOptions(precision=serving.precision, threads=serving.threads)


def _load_model_to_update(model: Path) -> Any:
    """The towers of the artifact a command updates in place: loaded (so verified) and its folder
    checked writable before any data is read."""
    from recs.retrieval.retriever import Retriever

    retriever = Retriever.load(model)
    check_output(model, "--model", "artifact")
    return retriever


def _model_config(model: Path, config_path: Path | None) -> RecsConfig:
    """--config when given, else the configuration the model was trained with, else defaults."""
    if config_path is not None:
        return load_config(config_path)
    from recs.artifacts import open_artifact
    from recs.serving.fit import read_config

    return read_config(open_artifact(model)) or RecsConfig()


@config_app.command("show")
@handle_errors
def config_show(
    model: Annotated[Path | None, typer.Option("--model", help="Artifact folder: the configuration it was trained with.")] = None,
    config: ConfigOption = None,
) -> None:
    """Print the whole configuration (every section, defaults filled in) as JSON: of a model, of a
    TOML file, or the defaults."""
    if model is not None and config is not None:
        raise ConfigError("give --model or --config, not both")
    settings = _model_config(model, None) if model is not None else load_config(config)
    console.print_json(json.dumps(settings.model_dump(mode="json")))


def evaluate_artifact(engine: Any, artifact: Path, items: Any, split: Any, ks: list[int], dataset_name: str) -> list[dict[str, Any]]:
    from recs.evaluation.adapters import CandidatesRecommender, TwoTowerRecommender
    from recs.evaluation.protocol import evaluate as evaluate_model

    retriever = engine.retriever
    rows: list[dict[str, Any]] = []
    # `recs train-ranker` learns from these same last baskets, so scoring the ranking stage here
    # would be in-sample: its held-out figures come from `recs benchmark` (validation-basket
    # training, test-basket evaluation). The towers never trained on these baskets.
    recommenders: list[Any] = [TwoTowerRecommender(retriever=retriever), CandidatesRecommender(retriever=retriever)]
    if engine.pipeline.ranker is not None:
        console.print("note: the ranking stage is not scored here (it was trained on these baskets); "
                      "`recs benchmark --data DIR` gives its held-out figures", highlight=False)
    for recommender in recommenders:
        recommender.fit(split.fit_events, items)
        for slice_name, metrics in evaluate_model(recommender, split, items, ks=ks).items():
            rows.append({"dataset": dataset_name, "method": recommender.name, "slice": slice_name,
                         "metrics": metrics, "notes": f"artifact {artifact}"})
    return rows


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
