"""`recs build-index --from-shards`: a FAISS index from vector shards without holding all the
vectors twice: the quantiser is trained on a seeded sample, then the shards are added one by one
(`ItemIndex.train` + `add`); the catalog's vector matrix is filled from the same pass."""

from __future__ import annotations

import numpy as np
import polars as pl

from recs.batch.shards import ShardManifest, ids_digest, iter_shards, sample_vectors
from recs.errors import ConfigError
from recs.progress import progress_bar
from recs.retrieval.index import ItemIndex

__all__ = ["DEFAULT_SAMPLE", "index_from_shards"]

DEFAULT_SAMPLE = 100_000  # training vectors: plenty for nlist ~ 4 sqrt(n) lists and 256 PQ centroids


def index_from_shards(
    manifest: ShardManifest, items: pl.DataFrame, kind: str = "auto", sample_size: int = DEFAULT_SAMPLE,
    seed: int = 0, show_progress: bool = False,
) -> tuple[ItemIndex, np.ndarray]:
    """(index, the vectors in catalog order) of the shards of `items` (the catalog they were
    encoded from: same ids, same order). With `sample_size` >= the catalog the sample is every
    vector in order, and the index equals `ItemIndex.build` on the whole matrix."""
    ids = items["item_id"].cast(pl.Utf8).to_list()
    if manifest.count != len(ids) or manifest.ids_sha256 != ids_digest(ids):
        raise ConfigError(f"{manifest.folder}: the shards hold another catalog ({manifest.count} items) than this one "
                          f"({len(ids)} items): encode this catalog (`recs encode --items`) or give its file (--items)")
    if sample_size <= 0:
        raise ConfigError(f"--sample must be positive, got {sample_size}")
    categories = items["category"].to_list() if "category" in items.columns else None
    in_stock = items["in_stock"].fill_null(True).to_list() if "in_stock" in items.columns else None
    index = ItemIndex(dim=manifest.dim, kind=kind)
    index.train(sample_vectors(manifest, sample_size, seed), manifest.count)
    vectors = np.empty((manifest.count, manifest.dim), dtype=np.float32)
    start = 0
    with progress_bar("indexing shards", total=len(manifest.shards), enabled=show_progress) as advance:
        for shard_ids, shard in iter_shards(manifest):
            stop = start + len(shard)
            if shard_ids != ids[start:stop]:
                raise ConfigError(f"{manifest.folder}: shard ids differ from the catalog's at rows {start}-{stop}")
            index.add(shard_ids, shard, categories=None if categories is None else categories[start:stop],
                      in_stock=None if in_stock is None else in_stock[start:stop])
            vectors[start:stop] = shard
            start = stop
            advance()
    return index, vectors
