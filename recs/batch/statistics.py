"""The behaviour statistics that grow with the log, from Parquet event files partitioned by user:
each partition counted on its own (`StatisticsParts.count`, in-process or as a Ray task), the
counts summed as they arrive (`merge`), and what is not a sum (top neighbours, ALS, re-buy rate)
computed once at the end (`finish`). The result equals `fit_statistics` on all the events (the
trending counts to rounding: each part's is decayed on to the last event before the sum).

A partition file holds whole users (every event of a user in one file) with the served log's
columns: user_id, item_id, timestamp, event, basket_id (`write_event_partitions` writes them
from a loaded shop). An order id shared by two users' events would join their baskets in
`fit_statistics` and not here: order ids are per user in any shop."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from recs.batch.encode import RayOptions
from recs.batch.raykit import connect
from recs.errors import ConfigError, DataError
from recs.io import atomic_write_file
from recs.progress import progress_bar
from recs.retrieval.candidates import CandidateConfig
from recs.retrieval.statistics import BehaviourStats, StatisticsParts

__all__ = ["EVENT_COLUMNS", "batch_statistics", "event_partitions", "read_statistics", "save_statistics", "write_event_partitions"]

EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "event", "basket_id")


def _partition_of(user_id: str, n_parts: int) -> int:
    # A stable hash (Python's own is salted per process): a user lands in the same file every run.
    return int.from_bytes(hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest(), "big") % n_parts


def write_event_partitions(events: pl.DataFrame, out: Path, n_parts: int) -> list[Path]:
    """`events` (a loaded shop's) as `n_parts` Parquet files `part-00000.parquet`..., each user's
    events in one of them (by a stable hash of the user id); empty parts are not written."""
    if n_parts <= 0:
        raise ConfigError(f"the number of partitions must be positive, got {n_parts}")
    frame = events.select(EVENT_COLUMNS).with_columns(
        pl.col("user_id").cast(pl.Utf8).map_elements(lambda u: _partition_of(u, n_parts), return_dtype=pl.Int64).alias("_part"))
    paths = []
    for (part,), group in sorted(frame.group_by("_part"), key=lambda kv: kv[0][0]):
        path = out / f"part-{int(part):05d}.parquet"
        atomic_write_file(path, lambda tmp, g=group.drop("_part"): g.write_parquet(tmp))
        paths.append(path)
    return paths


def event_partitions(folder: Path) -> list[Path]:
    """The Parquet files of an event folder (sorted), or a one-line error."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise DataError(f"{folder}: no *.parquet event files (one folder of Parquet files partitioned by user)")
    return files


def _count(path: str, row_of: dict[str, int], n_items: int, config: CandidateConfig) -> StatisticsParts:
    """One partition's counts: its events restricted to the catalog, as the served log is."""
    events = pl.read_parquet(path)
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise DataError(f"{path}: missing event column(s) {', '.join(missing)}")
    events = events.select(EVENT_COLUMNS).filter(pl.col("item_id").is_in(list(row_of)))
    return StatisticsParts.count(events, row_of, n_items, config)


def batch_statistics(
    files: list[Path], row_of: dict[str, int], n_items: int, config: CandidateConfig,
    ray: RayOptions | None = None, show_progress: bool = False,
) -> BehaviourStats:
    """`fit_statistics` over the events of `files` (partitioned by user): in this process, one file
    at a time, or as Ray tasks (`ray`), summed on this side as they finish."""
    total: StatisticsParts | None = None
    with progress_bar("counting partitions", total=len(files), enabled=show_progress) as advance:
        if ray is None:
            for path in files:
                part = _count(str(path), row_of, n_items, config)
                total = part if total is None else total.merge(part)
                advance()
        else:
            module = connect(ray.address, ray.num_cpus)
            task = module.remote(_count)
            shared = module.put(row_of)  # once in the object store, not once per task
            pending = [task.remote(str(Path(p).resolve()), shared, n_items, config) for p in files]
            while pending:
                done, pending = module.wait(pending, num_returns=1)
                part = module.get(done[0])
                total = part if total is None else total.merge(part)
                advance()
    if total is None:
        raise DataError("no event files")
    return total.finish(config)


def save_statistics(stats: BehaviourStats, folder: Path) -> Path:
    """The statistics as an artifact's interactions component holds them (.npy + statistics.json),
    in a folder swapped in whole (`recs.io.atomic_replace_dir`)."""
    import json

    import numpy as np

    from recs.io import atomic_replace_dir
    from recs.retrieval.statistics import FILES

    def fill(tmp: Path) -> None:
        for name, array in stats.arrays().items():
            np.save(tmp / name, array, allow_pickle=False)
        (tmp / FILES["meta"]).write_text(json.dumps(stats.meta()), encoding="utf-8")

    return atomic_replace_dir(folder, fill)


def read_statistics(folder: Path) -> BehaviourStats:
    """`save_statistics`'s folder back (no pickle)."""
    import numpy as np

    return BehaviourStats.from_files(lambda name: np.load(folder / name, allow_pickle=False),
                                     lambda name: (folder / name).read_text(encoding="utf-8"),
                                     lambda name: (folder / name).is_file())
