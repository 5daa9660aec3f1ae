"""`recs encode`: a catalog's item vectors into shards (`recs.batch.shards`), in-process or as
Ray Data `map_batches` over CPU or GPU workers. Both run `ShardEncoder` on the same shards, so
their folders hold the same vectors (to float tolerance: batches pad differently)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recs.artifacts import Artifact, open_artifact
from recs.batch.raykit import connect, ray_data
from recs.batch.shards import ShardManifest, start_folder, write_manifest, write_shard
from recs.errors import ConfigError
from recs.progress import progress_bar
from recs.retrieval.config import RetrievalConfig
from recs.retrieval.retriever import item_catalog
from recs.serving.onnx_runtime import is_onnx_export, read_towers

__all__ = ["DEFAULT_SHARD_ROWS", "RayOptions", "ShardEncoder", "encode_shards", "model_identity"]

DEFAULT_SHARD_ROWS = 50_000


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray job runs: `address` None = a local Ray; `workers` encoders at
    once (None: Ray decides); `gpus_per_worker` > 0 puts each on a GPU share."""

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    num_cpus: int | None = None  # a local Ray's size (None: the machine's)


class ShardEncoder:
    """Loads the artifact's item encoder once (per Ray worker: a callable class) and turns rows
    of shards (shard number, item ids, item texts) into shard files."""

    def __init__(self, model: str, out: str, device: str | None = None) -> None:
        towers = read_towers(open_artifact(model))
        if device is not None and hasattr(towers, "to"):  # the torch towers; ONNX picks its providers
            towers = towers.to(device)
        self.towers = towers
        self.out = Path(out)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        entries = []
        for number, ids, texts in zip(batch["shard"], batch["item_id"], batch["text"], strict=True):
            vectors = self.towers.encode_items([str(t) for t in texts])
            entries.append(write_shard(self.out, int(number), [str(i) for i in ids], vectors))
        return {"entry": np.array([json.dumps(e) for e in entries], dtype=object)}


def model_identity(artifact: Artifact) -> dict[str, Any]:
    """Which encoder made the vectors: the artifact, whether it is an ONNX export, and a hash of
    its tower files (their sha256 in the artifact's manifest)."""
    files = artifact.manifest["files"]
    onnx = is_onnx_export(artifact)
    if onnx:  # the export's graphs and tokenizer
        chosen = {rel: d for rel, d in files.items() if rel.endswith(".onnx") or "tokenizer" in rel}
    else:
        prefixes = artifact.components["towers"].files
        chosen = {rel: d for rel, d in files.items() if any(rel == p or rel.startswith(p + "/") for p in prefixes)}
    digest = hashlib.sha256(json.dumps(chosen, sort_keys=True).encode("utf-8")).hexdigest()
    return {"artifact": str(artifact.path), "onnx": onnx, "towers_sha256": digest}


def encode_shards(
    model: Path, out: Path, items: pl.DataFrame | None = None, shard_rows: int = DEFAULT_SHARD_ROWS,
    ray: RayOptions | None = None, show_progress: bool = False,
) -> ShardManifest:
    """The catalog (`items`, default the artifact's) encoded by the artifact's item tower (its
    ONNX one for a `recs export` folder) into shards under `out`; `ray` None: in this process."""
    if shard_rows <= 0:
        raise ConfigError(f"--shard-rows must be positive, got {shard_rows}")
    artifact = open_artifact(model)
    config = RetrievalConfig.parse_dict(artifact.read_json("retrieval_config.json"), source=f"{model}/retrieval_config.json")
    items = artifact.read_parquet("items.parquet") if items is None else items
    catalog = item_catalog(items, config)
    ids, texts = catalog.item_ids, catalog.texts
    rows = [{"shard": k, "item_id": ids[s : s + shard_rows], "text": texts[s : s + shard_rows]}
            for k, s in enumerate(range(0, len(ids), shard_rows))]
    start_folder(out)
    if ray is None:
        encoder = ShardEncoder(str(model), str(out))
        entries = []
        with progress_bar("encoding shards", total=len(rows), enabled=show_progress) as advance:
            for row in rows:
                entries += [json.loads(e) for e in encoder({k: [v] for k, v in row.items()})["entry"]]
                advance()
    else:
        entries = _encode_with_ray(model, out, rows, ray)
    return write_manifest(out, entries, list(ids), model_identity(artifact))


def _encode_with_ray(model: Path, out: Path, rows: list[dict[str, Any]], options: RayOptions) -> list[dict[str, Any]]:
    ray = connect(options.address, options.num_cpus)
    device = "cuda" if options.gpus_per_worker > 0 else None
    per_worker = ("GPU", options.gpus_per_worker) if options.gpus_per_worker > 0 else ("CPU", 1.0)
    workers = options.workers or max(1, int(ray.cluster_resources().get(per_worker[0], 1) // per_worker[1]))
    data = ray_data(ray)
    dataset = data.from_items(rows).map_batches(
        ShardEncoder, batch_size=1, compute=data.ActorPoolStrategy(size=max(1, min(workers, len(rows)))),
        num_gpus=options.gpus_per_worker or None,
        fn_constructor_kwargs={"model": str(Path(model).resolve()), "out": str(Path(out).resolve()), "device": device},
    )
    return [json.loads(row["entry"]) for row in dataset.take_all()]
