"""`recs encode` (item vectors into shards) and `recs statistics` (behaviour statistics from event
partitions): batch work in this process, or as a Ray job with --ray (the [distributed] extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recs.cli.common import LOCAL_RAY, app, check_output, console, handle_errors

if TYPE_CHECKING:
    from recs.batch.encode import RayOptions

# `--ray` alone means a local Ray: `recs.cli.common.main` gives a bare `--ray` the value "local".
RayOption = Annotated[str | None, typer.Option(
    "--ray", metavar="[ADDRESS]",
    help="Run as a Ray job: a local Ray (bare --ray), or a running cluster (auto, HOST:6379, ray://HOST:10001).")]


def _ray_options(ray: str | None, workers: int | None = None, gpus: float = 0.0) -> RayOptions | None:
    """The Ray job's options, or None: in this process."""
    from recs.batch.encode import RayOptions
    from recs.errors import ConfigError

    if workers is not None and workers <= 0:
        raise ConfigError(f"--workers must be positive, got {workers}")
    if gpus < 0:
        raise ConfigError(f"--gpus-per-worker must be >= 0, got {gpus}")
    if ray is None:
        if workers is not None or gpus:
            raise ConfigError("--workers and --gpus-per-worker are for a Ray job: add --ray")
        return None
    if not ray.strip():
        raise ConfigError("--ray: an empty cluster address (leave the value out for a local Ray)")
    return RayOptions(address=None if ray == LOCAL_RAY else ray, workers=workers, gpus_per_worker=gpus)


@app.command("encode")
@handle_errors
def encode_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder (trained, or a `recs export` one: its ONNX item tower).")],
    out: Annotated[Path, typer.Option("--out", help="Shard folder (shard-NNNNN.npy + .ids.json, manifest.json written last).")],
    items: Annotated[Path | None, typer.Option("--items", help="A catalog file to encode (default: the model's catalog).")] = None,
    shard_rows: Annotated[int, typer.Option("--shard-rows", help="Items per shard.")] = 50_000,
    ray_address: RayOption = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Ray: encoders at once (default: one per CPU, or per GPU share).")] = None,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="Ray: GPU share of each encoder (0: CPU workers).")] = 0.0,
) -> None:
    """Encode a catalog with the model's item tower into vector shards, in this process or as Ray
    Data map_batches over CPU or GPU workers; `recs build-index --from-shards` indexes them."""
    from recs.batch.encode import encode_shards
    from recs.data.load import load_catalog

    check_output(out, "--out", "folder")
    ray = _ray_options(ray_address, workers, gpus_per_worker)
    catalog = None if items is None else load_catalog(items)
    manifest = encode_shards(model, out, catalog, shard_rows, ray, show_progress=ray is None)
    where = "a Ray job" if ray is not None else "this process"
    console.print(f"encoded {manifest.count} items (dim {manifest.dim}) into {len(manifest.shards)} shard(s) in {out} "
                  f"({where})", highlight=False)


@app.command("statistics")
@handle_errors
def statistics_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder: its catalog and candidate settings.")],
    events: Annotated[Path, typer.Option("--events", help="Folder of Parquet event files partitioned by user (user_id, item_id, timestamp, event, basket_id).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the statistics (.npy + statistics.json, replaced atomically).")],
    items: Annotated[Path | None, typer.Option("--items", help="The catalog the rows follow (default: the model's).")] = None,
    ray_address: RayOption = None,
) -> None:
    """Popularity, co-purchase neighbours, buy-again rates, TIFU vectors and ALS factors from event
    partitions: each partition counted apart (a Ray task with --ray), the counts summed."""
    from recs.artifacts import open_artifact
    from recs.batch.statistics import batch_statistics, event_partitions, save_statistics
    from recs.data.load import load_catalog
    from recs.retrieval.config import RetrievalConfig

    check_output(out, "--out", "folder")
    ray = _ray_options(ray_address)
    files = event_partitions(events)
    artifact = open_artifact(model)
    config = RetrievalConfig.parse_dict(artifact.read_json("retrieval_config.json"), source=f"{model}/retrieval_config.json")
    catalog = artifact.read_parquet("items.parquet") if items is None else load_catalog(items)
    ids = catalog["item_id"].to_list()
    stats = batch_statistics(files, {item: row for row, item in enumerate(ids)}, len(ids), config.candidates, ray,
                             show_progress=ray is None)
    save_statistics(stats, out)
    console.print(f"statistics of {len(files)} event partition(s) over {len(ids)} items into {out}", highlight=False)
