"""Bundling stage: the learned set scorer, its training, and the constrained bundle composer.

    from recs.bundling import Bundler, save_bundler
    bundler = Bundler.fit(retriever, events=dataset.events, bundles=dataset.bundles)
    save_bundler("build/demo/model", bundler)
    bundler.compose(user_id="U0042", items=["I00108"], size=(2, 4), budget=250, n=3)

Importing this package does not import torch (the scorer loads it when first used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recs.bundling.bundler import Bundle, BundleItem, Bundler, Bundles, RankedBundle, save_bundler
from recs.bundling.composer import BundleConstraints, ItemTable, check_bundle, compose
from recs.bundling.config import BundlerConfig, ComposeConfig, SetScorerConfig, SetTrainConfig
from recs.bundling.sets import TrainingSets, collect_sets

if TYPE_CHECKING:
    from recs.bundling.scorer import SetScorer
    from recs.bundling.training import fit_set_scorer

__all__ = [
    "Bundle",
    "BundleConstraints",
    "BundleItem",
    "Bundler",
    "BundlerConfig",
    "Bundles",
    "ComposeConfig",
    "ItemTable",
    "RankedBundle",
    "SetScorer",
    "SetScorerConfig",
    "SetTrainConfig",
    "TrainingSets",
    "check_bundle",
    "collect_sets",
    "compose",
    "fit_set_scorer",
    "save_bundler",
]


def __getattr__(name: str) -> Any:
    if name == "SetScorer":
        from recs.bundling.scorer import SetScorer

        return SetScorer
    if name == "fit_set_scorer":
        from recs.bundling.training import fit_set_scorer

        return fit_set_scorer
    raise AttributeError(f"module 'recs.bundling' has no attribute {name!r}")
