"""Training examples for the towers: (history before t -> items of the basket at t)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from recs.data.baskets import DEFAULT_SESSION_GAP
from recs.data.text import render_user

# Targets come from purchases; when a shop logs none, carts then clicks stand in for them.
_TARGET_EVENTS: tuple[str, ...] = ("purchase", "cart", "click")


@dataclass
class Catalog:
    """Item ids and texts in a fixed row order; every vector array follows this order."""

    item_ids: list[str]
    texts: list[str]  # what the item tower reads
    titles: list[str]  # what a user history mentions
    row_of: dict[str, int]

    @classmethod
    def from_items(cls, items: pl.DataFrame, render: Callable[[pl.DataFrame], list[str]]) -> Catalog:
        ids = items["item_id"].to_list()
        return cls(
            item_ids=ids,
            texts=render(items),
            titles=items["title"].to_list(),
            row_of={item: i for i, item in enumerate(ids)},
        )

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class UserState:
    """What the user tower reads: the history text and the history item rows (chronological)."""

    text: str
    history_rows: list[int]


@dataclass
class TrainingExamples:
    states: list[UserState]  # one per target basket
    pair_state: np.ndarray  # (P,) index into states
    pair_item: np.ndarray  # (P,) catalog row of the positive item
    basket_items: list[frozenset[int]]  # per state: every positive of that basket (accidental hits)
    # Per state: when its target basket was bought (epoch seconds): resuming tells new pairs from old.
    target_times: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pair_item)

    def subset(self, pairs: np.ndarray) -> TrainingExamples:
        """Only the pairs at indices `pairs` (the states are shared)."""
        return TrainingExamples(self.states, self.pair_state[pairs], self.pair_item[pairs], self.basket_items, self.target_times)


def target_event_kind(events: pl.DataFrame) -> str:
    present = set(events["event"].unique().to_list()) if events.height else set()
    for kind in _TARGET_EVENTS:
        if kind in present:
            return kind
    return "purchase"


def _user_state(
    rows: list[tuple[str, str, int]], titles: list[str], max_events: int, max_chars: int
) -> UserState:
    recent = rows[-max_events:]
    history = [(event, titles[item]) for event, _, item in recent]
    seen: dict[int, None] = {}
    for _, _, item in recent:
        seen.pop(item, None)
        seen[item] = None  # keeps the most recent position of each item
    return UserState(render_user(history, max_chars=max_chars), list(seen))


def user_state_of_rows(
    kinds: Sequence[str], rows: Sequence[int], titles: list[str], max_events: int = 50, max_chars: int = 512
) -> UserState:
    """State from one user's events as arrays (chronological event kinds and catalog rows)."""
    return _user_state([(e, "", r) for e, r in zip(kinds, rows, strict=True)], titles, max_events, max_chars)


def user_states(
    events: pl.DataFrame, catalog: Catalog, max_events: int = 50, max_chars: int = 512
) -> dict[str, UserState]:
    """Each user's state after all their events (what the model reads to recommend now)."""
    return {user: state_from_events(group, catalog, max_events, max_chars) for user, group in _by_user(events, catalog)}


def _by_user(events: pl.DataFrame, catalog: Catalog) -> list[tuple[str, pl.DataFrame]]:
    known = events.filter(pl.col("item_id").is_in(list(catalog.row_of))).sort(["user_id", "timestamp"])
    return [(str(key[0]), group) for key, group in known.group_by("user_id", maintain_order=True)]


def state_from_events(
    user_events: pl.DataFrame, catalog: Catalog, max_events: int = 50, max_chars: int = 512
) -> UserState:
    """State from one user's events (chronological or not; unknown items are skipped)."""
    known = user_events.filter(pl.col("item_id").is_in(list(catalog.row_of))).sort("timestamp")
    rows = [(e, "", catalog.row_of[i]) for e, i in zip(known["event"], known["item_id"], strict=True)]
    return _user_state(rows, catalog.titles, max_events, max_chars)


def build_examples(
    events: pl.DataFrame,
    catalog: Catalog,
    max_events: int = 50,
    max_chars: int = 512,
    session_gap: timedelta | None = DEFAULT_SESSION_GAP,
    new_items_only: bool = False,
) -> TrainingExamples:
    """One state per target basket that has some history before it; one pair per distinct item.

    As in the evaluation protocol (`leave_last_out`), a basket's history stops at the start of the
    browsing session that ends in it, so the towers learn to predict a basket from earlier visits,
    not to echo the items carted minutes before checkout. `session_gap=None` keeps those events."""
    gap_s = None if session_gap is None else session_gap.total_seconds()
    kind = target_event_kind(events)
    titles = catalog.titles
    known = events.filter(pl.col("item_id").is_in(list(catalog.row_of)))
    # Without basket ids (carts, clicks), each target event is its own basket.
    known = known.with_columns(
        pl.when(pl.col("basket_id").is_not_null())
        .then(pl.col("basket_id"))
        .otherwise(pl.concat_str([pl.lit("e:"), pl.int_range(pl.len()).cast(pl.Utf8)]))
        .alias("_basket")
    ).sort(["user_id", "timestamp", "_basket", "item_id"])
    states: list[UserState] = []
    baskets: list[frozenset[int]] = []
    pair_state: list[int] = []
    pair_item: list[int] = []
    target_times: list[float] = []
    for _, group in known.group_by("user_id", maintain_order=True):
        event_kinds = group["event"].to_list()
        items = [catalog.row_of[i] for i in group["item_id"].to_list()]
        basket_ids = group["_basket"].to_list()
        times = group["timestamp"].to_list()
        rows = list(zip(event_kinds, basket_ids, items, strict=True))
        start = 0
        while start < len(rows):
            end = start
            while end < len(rows) and basket_ids[end] == basket_ids[start]:
                end += 1
            if event_kinds[start] == kind:
                # History: strictly earlier events only (a basket's own lines are not history).
                cut = start
                while cut > 0 and times[cut - 1] >= times[start]:
                    cut -= 1
                while gap_s is not None and cut > 0 and (times[cut] - times[cut - 1]).total_seconds() <= gap_s:
                    cut -= 1
                if cut > 0:
                    positives = frozenset(items[start:end])
                    if new_items_only:
                        bought = {items[i] for i in range(start) if event_kinds[i] == kind}
                        positives = positives - bought
                if cut > 0 and positives:
                    states.append(_user_state(rows[:cut], titles, max_events, max_chars))
                    baskets.append(positives)
                    target_times.append(times[start].timestamp())
                    for item in sorted(positives):
                        pair_state.append(len(states) - 1)
                        pair_item.append(item)
            start = end
    return TrainingExamples(
        states=states,
        pair_state=np.asarray(pair_state, dtype=np.int64),
        pair_item=np.asarray(pair_item, dtype=np.int64),
        basket_items=baskets,
        target_times=np.asarray(target_times, dtype=np.float64),
    )
