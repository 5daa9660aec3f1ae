"""What a shop must hold before a model can learn from it or be scored on it. Each rule lives here
once and is checked before any training (`recs train`, `train-ranker`, `train-bundler`,
`benchmark`, `evaluate`, and `Engine.fit`), so that a degenerate shop gets one clear DataError
rather than a crash deep inside a trainer or a model learned from nothing."""

from __future__ import annotations

import polars as pl

from recs.data.splits import Split
from recs.errors import DataError

__all__ = ["MIN_ITEMS", "MIN_TRAINING_PAIRS", "require_held_out", "require_items", "require_training_pairs"]

MIN_ITEMS = 2  # with one item there is nothing to rank
MIN_TRAINING_PAIRS = 2  # the towers' in-batch softmax needs another positive as a negative

_TWO_BASKETS = "users with at least two purchase baskets (the last one is held out)"


def require_items(items: pl.DataFrame, what: str) -> None:
    """DataError unless the catalog has at least MIN_ITEMS items."""
    if items.height < MIN_ITEMS:
        raise DataError(f"{what} needs at least {MIN_ITEMS} items in the catalog, the items file has {items.height}: "
                        "with one item there is nothing to rank")


def require_held_out(split: Split, what: str, validation: bool = False) -> None:
    """DataError unless some user has a purchase basket after an earlier one (a test basket) and,
    with `validation`, a basket before that one too."""
    if split.test.height == 0:
        raise DataError(f"{what} needs {_TWO_BASKETS}; no user has a purchase basket after an earlier one")
    if validation and split.valid.height == 0:
        raise DataError(f"{what} needs users with at least three purchase baskets (test, validation, history); "
                        "no user has three")


def require_training_pairs(n_pairs: int, new_items_only: bool, what: str = "recs train") -> None:
    """DataError unless the towers have at least MIN_TRAINING_PAIRS (history, basket item) pairs."""
    if n_pairs < MIN_TRAINING_PAIRS:
        kind = "an item a user buys for the first time" if new_items_only else "an item a user buys"
        raise DataError(f"{what}: nothing to train the towers on: {n_pairs} training pairs, at least {MIN_TRAINING_PAIRS} "
                        f"needed (a pair is {kind} after earlier events of theirs; carts or clicks stand in when no "
                        "purchase is logged): the shop needs users with more than one visit")
