"""`recs serve`, and the commands that feed a served model: `refresh`, `forget`, `items upsert`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recs.cli.common import ConfigOption, app, check_output, console, handle_errors, writes_artifact
from recs.config import HttpConfig, load_config
from recs.errors import ConfigError


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



items_app = typer.Typer(no_args_is_help=True, help="Add, change and remove items of a model without a rebuild.")
app.add_typer(items_app, name="items")


@items_app.command("upsert")
@handle_errors
@writes_artifact("model")
def items_upsert(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder (`recs train`) or ONNX export (`recs export`).")],
    file: Annotated[Path | None, typer.Argument(help="Items file (csv, tsv, parquet, jsonl): known ids are updated, others added.")] = None,
    remove: Annotated[str | None, typer.Option("--remove", help="Comma-separated ids of discontinued items to remove.")] = None,
    events: Annotated[str | None, typer.Option("--events", help="An event store (SQLite file or postgresql:// DSN): its item changes (PUT/DELETE /items) are folded in first.")] = None,
) -> None:
    """Add new items (encoded with the item tower, indexed at once), update known ones in place and
    remove discontinued ones; writes a new version of the artifact."""
    from recs.retrieval.itemchanges import ItemChanges
    from recs.serving.eventstore import open_store
    from recs.serving.items import upsert_artifact

    removed = [i.strip() for i in (remove or "").split(",") if i.strip()]
    if file is None and not removed and events is None:
        raise ConfigError("give an items FILE, --remove ID,... or --events STORE")
    changes = ItemChanges.from_file(file, removed)  # a bad file fails before the model loads
    summary = upsert_artifact(model, changes, open_store(events) if events is not None else None)
    console.print(f"{summary.line()} in {model}", highlight=False)
