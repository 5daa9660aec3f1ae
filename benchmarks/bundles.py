"""Bundling benchmark (placeholder while being written)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import polars as pl

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks.datasets import load_dataset_by_name  # noqa: E402
from recs.data.schema import Dataset  # noqa: E402

CACHE_DIR = _REPO / "build" / "bench" / "bundles"


def load_named(name: str, root: Path | None = None) -> Dataset:
    return load_dataset_by_name(name, root)


def item_vectors(name: str, items: pl.DataFrame, model: str = "default") -> np.ndarray:
    """Untuned item-tower vectors (the default backbone, identity head) of `items`, cached under
    build/ by a hash of the texts."""
    from recs.data.text import render_item
    from recs.retrieval.config import RetrievalConfig

    template = RetrievalConfig().item_template
    texts = [render_item(r, template) for r in items.iter_rows(named=True)]
    digest = hashlib.sha256(("\n".join(texts) + model).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"vectors-{name.replace('/', '-')}-{digest}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    from recs.encoders.backbone import load_backbone, load_tokenizer
    from recs.retrieval.encode import encode_items
    from recs.retrieval.towers import TowerConfig, TwoTowerModel

    tower = TwoTowerModel(load_backbone(model), TowerConfig(model=model))
    vectors = encode_items(tower, load_tokenizer(model), texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors, allow_pickle=False)
    return vectors
