"""What every command shares: the typer apps, the consoles, the one error handler, the output
checks, the options several commands take, and the shop and model loaders."""

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

from recs.config import RecsConfig, load_config
from recs.configmodel import OnBadRows
from recs.data.config import DataConfig
from recs.errors import ArtifactError, ConfigError, DataError, RecsError

if TYPE_CHECKING:
    from recs.data.schema import Dataset


app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None, help="recs: e-commerce recommendations.")
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
            from recs.distributed import is_main

            if create:  # a bad target is a bad option (exit 2), refused before the lock and any work
                check_output(kwargs[option], f"--{option}", "artifact")
            if not is_main():  # torchrun's other ranks train beside rank 0, which locks and writes
                return func(*args, **kwargs)
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


def print_warning(message: str) -> None:
    """A warning the user must see: one line on stderr."""
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def runtime_options(config_path: Path | None) -> Any:
    """The ONNX runtime settings of --config's [serving] section (None: environment defaults)."""
    if config_path is None:
        return None
    from recs.serving.onnx_runtime import RuntimeOptions

    serving = load_config(config_path).serving
    return RuntimeOptions(precision=serving.precision, threads=serving.threads)


def load_model_to_update(model: Path) -> Any:
    """The towers of the artifact a command updates in place: loaded (so verified) and its folder
    checked writable before any data is read."""
    from recs.retrieval.retriever import Retriever

    retriever = Retriever.load(model)
    check_output(model, "--model", "artifact")
    return retriever


def model_config(model: Path, config_path: Path | None) -> RecsConfig:
    """--config when given, else the configuration the model was trained with, else defaults."""
    if config_path is not None:
        return load_config(config_path)
    from recs.artifacts import open_artifact
    from recs.serving.fit import read_config

    return read_config(open_artifact(model)) or RecsConfig()


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, default=str).strip('"') if not isinstance(value, str) else value


# The commands that run under torchrun, one process per rank (recs/distributed.py): any other
# would run N times over the same files.
DISTRIBUTED_COMMANDS = frozenset({"train"})


# Options whose value may be left out (`--ray [ADDRESS]`), with the value a bare one means: typer
# has no such option, so `main` fills the value in before typer parses.
LOCAL_RAY = "local"
OPTIONAL_VALUES = {"--ray": LOCAL_RAY}


def with_optional_values(args: list[str]) -> list[str]:
    """`args` with each bare optional-value option (last, or followed by another option) given its
    default value."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[arg])
    return out


def main() -> None:
    from recs.distributed import world

    sys.argv[1:] = with_optional_values(sys.argv[1:])

    try:
        distributed = world().distributed
    except ConfigError as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if distributed and command not in DISTRIBUTED_COMMANDS:
        err_console.print(f"[red]error:[/red] `recs {command}` runs in one process; under torchrun only "
                          f"{', '.join(f'`recs {c}`' for c in sorted(DISTRIBUTED_COMMANDS))} does", highlight=False, soft_wrap=True)
        sys.exit(ConfigError.exit_code)
    app()

