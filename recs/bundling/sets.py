"""Training data for the set scorer: real sets and their corruptions (numpy/polars, no torch).

Real sets come from
- orders: purchases sharing an `order_id` (basket ids `o:...`),
- sessions: purchases without an order id, grouped by a 30-minute window (basket ids `s:...`),
- curated bundles (the bundles file).
A bundle identical to a basket is kept once, as the basket (which carries a user and a time).
Each basket also carries the user's purchases strictly before it: the user-vector input.

Corruptions of a real set swap one item for
- `substitute`: another item of the same leaf category (the nearest item by item vector when the
  item has no category or is alone in it),
- `random`: any catalog item,
- `popular`: an item drawn in proportion to its frequency in the sets.
Training also uses two harder kinds: `near` (the nearest items to another member: a set with two
near-duplicates) and `cooc` (an item often bought with another member, but not in this set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recs.bundling.cooc import CoocStats
from recs.data.baskets import basket_table
from recs.errors import DataError

CORRUPTIONS: tuple[str, ...] = ("substitute", "random", "popular")
NEGATIVE_KINDS: tuple[str, ...] = ("substitute", "random", "member", "popular", "near", "cooc")
NEAR_M = 10  # nearest items kept per item for `substitute` fallbacks and `near` negatives


@dataclass
class TrainingSets:
    """Real sets as catalog rows (distinct items, at least two per set)."""

    rows: list[np.ndarray] = field(default_factory=list)
    set_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # "order" | "session" | "bundle"
    users: list[str | None] = field(default_factory=list)
    # Catalog rows the user bought strictly before the set, chronological (empty: none known).
    histories: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sources:
            out[s] = out.get(s, 0) + 1
        return out

    def subset(self, index: Sequence[int]) -> TrainingSets:
        return TrainingSets(
            [self.rows[i] for i in index], [self.set_ids[i] for i in index], [self.sources[i] for i in index],
            [self.users[i] for i in index], [self.histories[i] for i in index],
        )


def _rows(items: Sequence[str], row_of: dict[str, int]) -> np.ndarray:
    seen: dict[int, None] = {}
    for item in items:
        row = row_of.get(item)
        if row is not None:
            seen.setdefault(row, None)
    return np.fromiter(seen, dtype=np.int64, count=len(seen))


def collect_sets(
    row_of: dict[str, int],
    events: pl.DataFrame | None = None,
    bundles: pl.DataFrame | None = None,
    max_history: int = 50,
) -> TrainingSets:
    """Sets of >= 2 catalog items from baskets (`events` with `basket_id`) and/or curated
    `bundles`. Either may be None or empty; items unknown to `row_of` are dropped."""
    out = TrainingSets()
    seen: set[frozenset[int]] = set()
    if events is not None and events.height and "basket_id" in events.columns:
        baskets = basket_table(events)
        for user, group in baskets.group_by("user_id", maintain_order=True):
            history: list[int] = []
            pending: list[int] = []  # bought at the current time: not "before" a same-time basket
            last_time = None
            for basket_id, time, items in group.select("basket_id", "time", "items").iter_rows():
                if time != last_time:
                    history.extend(pending)
                    pending = []
                    last_time = time
                rows = _rows(items, row_of)
                pending.extend(rows.tolist())
                if len(rows) < 2:
                    continue
                seen.add(frozenset(rows.tolist()))
                out.rows.append(rows)
                out.set_ids.append(str(basket_id))
                out.sources.append("order" if str(basket_id).startswith("o:") else "session")
                out.users.append(str(user[0]))
                out.histories.append(np.asarray(history[-max_history:], dtype=np.int64))
    if bundles is not None and bundles.height:
        grouped = bundles.group_by("bundle_id", maintain_order=True).agg(pl.col("item_id"))
        for bundle_id, items in grouped.iter_rows():
            rows = _rows(items, row_of)
            key = frozenset(rows.tolist())
            if len(rows) < 2 or key in seen:
                continue
            seen.add(key)
            out.rows.append(rows)
            out.set_ids.append(f"b:{bundle_id}")
            out.sources.append("bundle")
            out.users.append(None)
            out.histories.append(np.zeros(0, dtype=np.int64))
    return out


def require_sets(sets: TrainingSets, minimum: int = 2) -> None:
    if len(sets) < minimum:
        raise DataError(
            f"the set scorer needs at least {minimum} sets of two or more catalog items "
            f"(orders, sessions or bundles); found {len(sets)}"
        )


def split_sets(sets: TrainingSets, valid_fraction: float, seed: int) -> tuple[TrainingSets, TrainingSets]:
    """Train/validation split by set id (seeded). With fewer than 10 sets the validation sets are
    the training sets (too few to hold any out); the trainer reports it."""
    n = len(sets)
    if n < 10:
        return sets, sets
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_valid = max(1, round(valid_fraction * n))
    return sets.subset(sorted(order[n_valid:].tolist())), sets.subset(sorted(order[:n_valid].tolist()))


# ---------------------------------------------------------------------------------------------
# Negative sampling


def leaf_ids(categories: Sequence[str | None]) -> np.ndarray:
    """An int per row for its leaf category (the full path), -1 without one."""
    index: dict[str, int] = {}
    out = np.full(len(categories), -1, dtype=np.int64)
    for row, cat in enumerate(categories):
        if cat:
            out[row] = index.setdefault(cat, len(index))
    return out


def nearest_items(vectors: np.ndarray, rows: np.ndarray, m: int = NEAR_M, block: int = 1024) -> np.ndarray:
    """(n_items, m) nearest items by inner product for `rows` (others: -1), itself excluded."""
    n = len(vectors)
    out = np.full((n, m), -1, dtype=np.int64)
    m_eff = min(m, n - 1)
    if m_eff <= 0:
        return out
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        sims = vectors[chunk] @ vectors.T
        sims[np.arange(len(chunk)), chunk] = -np.inf
        top = np.argpartition(-sims, m_eff - 1, axis=1)[:, :m_eff]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[chunk, :m_eff] = np.take_along_axis(top, order, axis=1)
    return out


class NegativeSampler:
    """Vectorised draws of corrupting items for batches of sets."""

    def __init__(self, n_items: int, leaves: np.ndarray, near: np.ndarray, cooc: CoocStats) -> None:
        self.n_items = n_items
        self.leaves = leaves
        self.near = near
        self.cooc = cooc
        valid = leaves >= 0
        order = np.argsort(np.where(valid, leaves, np.iinfo(np.int64).max), kind="stable")
        self.leaf_members = order[: int(valid.sum())]
        n_leaves = int(leaves.max()) + 1 if valid.any() else 0
        self.leaf_count = np.bincount(leaves[valid], minlength=n_leaves)
        self.leaf_start = np.concatenate([[0], np.cumsum(self.leaf_count)[:-1]]).astype(np.int64)
        self.pos_in_leaf = np.zeros(n_items, np.int64)  # where each item sits in its leaf's list
        if len(self.leaf_members):
            self.pos_in_leaf[self.leaf_members] = np.arange(len(self.leaf_members)) - self.leaf_start[leaves[self.leaf_members]]
        self.members = np.flatnonzero(cooc.freq > 0)
        weights = cooc.freq.astype(np.float64) + 1e-3  # every item stays possible
        self.popular_p = weights / weights.sum()
        # Co-occurrence rows as one cumulative array, to draw a partner in proportion to counts.
        self.cum = np.cumsum(cooc.counts.astype(np.float64))
        bounds = np.searchsorted(cooc.keys, np.arange(n_items + 1, dtype=np.int64) * n_items)
        self.row_lo, self.row_hi = bounds[:-1], bounds[1:]

    def substitute(self, items: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """(len(items), k): same leaf category as each item, else its nearest items."""
        items = np.asarray(items, np.int64)
        leaf = self.leaves[items]
        count = np.where(leaf >= 0, self.leaf_count[np.maximum(leaf, 0)] if len(self.leaf_count) else 0, 0)
        u = rng.random((len(items), k))
        by_leaf = np.zeros((len(items), k), np.int64)
        has_leaf = count >= 2
        if has_leaf.any():
            # Uniform over the other members of the leaf: draw among count - 1, skip the item.
            start = self.leaf_start[leaf[has_leaf]]
            j = (u[has_leaf] * (count[has_leaf, None] - 1)).astype(np.int64)
            j += j >= self.pos_in_leaf[items[has_leaf]][:, None]
            by_leaf[has_leaf] = self.leaf_members[start[:, None] + j]
        near = self.near[items]
        n_near = np.maximum((near >= 0).sum(axis=1), 1)
        by_vec = np.take_along_axis(near, (u * n_near[:, None]).astype(np.int64), axis=1)
        out = np.where(has_leaf[:, None], by_leaf, by_vec)
        # Same item drawn, or no neighbour known: a random item instead.
        bad = (out == items[:, None]) | (out < 0)
        out[bad] = rng.integers(0, self.n_items, int(bad.sum()))
        return out

    def random(self, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.n_items, (n, k))

    def member(self, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform over the items that occur in some training set."""
        if not len(self.members):
            return self.random(n, k, rng)
        return self.members[rng.integers(0, len(self.members), (n, k))]

    def popular(self, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(self.n_items, size=(n, k), p=self.popular_p)

    def near_members(self, rest: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Nearest items to a random member of each rest set (rest padded with -1)."""
        member = _random_member(rest, k, rng)
        near = self.near[member]
        n_near = np.maximum((near >= 0).sum(axis=-1), 1)
        pick = (rng.random(member.shape) * n_near).astype(np.int64)
        out = np.take_along_axis(near, pick[..., None], axis=-1)[..., 0]
        bad = out < 0
        out[bad] = rng.integers(0, self.n_items, int(bad.sum()))
        return out

    def cooc_members(self, rest: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Items co-occurring with a random member of each rest set, drawn by count."""
        member = _random_member(rest, k, rng)
        lo, hi = self.row_lo[member], self.row_hi[member]
        out = rng.integers(0, self.n_items, member.shape)
        has = hi > lo
        if has.any():
            base = np.where(lo[has] > 0, self.cum[np.maximum(lo[has] - 1, 0)], 0.0)
            total = self.cum[hi[has] - 1] - base
            target = base + rng.random(int(has.sum())) * total
            pos = np.clip(np.searchsorted(self.cum, target, side="right"), lo[has], hi[has] - 1)
            out[has] = self.cooc.keys[pos] - member[has] * self.n_items
        return out

    def negatives(self, hidden: np.ndarray, rest: np.ndarray, counts: dict[str, int], rng: np.random.Generator) -> np.ndarray:
        """(B, sum(counts)) training negatives for completing `rest` whose true item is `hidden`."""
        n = len(hidden)
        draw = {
            "substitute": lambda k: self.substitute(hidden, k, rng),
            "random": lambda k: self.random(n, k, rng),
            "member": lambda k: self.member(n, k, rng),
            "popular": lambda k: self.popular(n, k, rng),
            "near": lambda k: self.near_members(rest, k, rng),
            "cooc": lambda k: self.cooc_members(rest, k, rng),
        }
        unknown = set(counts) - set(draw)
        if unknown:
            raise ValueError(f"unknown negative kind(s) {sorted(unknown)}; expected {NEGATIVE_KINDS}")
        parts = [draw[kind](counts[kind]) for kind in NEGATIVE_KINDS if counts.get(kind, 0) > 0]
        return np.concatenate(parts, axis=1) if parts else self.random(n, 1, rng)

    def corrupt(self, rows: np.ndarray, kind: str, rng: np.random.Generator, tries: int = 5) -> np.ndarray | None:
        """The set with one (random) item swapped by `kind`, or None if no swap left it a new set."""
        rows = np.asarray(rows, np.int64)
        for _ in range(tries):
            p = int(rng.integers(len(rows)))
            if kind == "substitute":
                new = int(self.substitute(rows[p : p + 1], 1, rng)[0, 0])
            elif kind == "random":
                new = int(self.random(1, 1, rng)[0, 0])
            elif kind == "popular":
                new = int(self.popular(1, 1, rng)[0, 0])
            else:
                raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
            if new not in rows:
                out = rows.copy()
                out[p] = new
                return out
        return None


def _random_member(rest: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(B, k) random non-padding members of each row of `rest` (B, L)."""
    n_valid = np.maximum((rest >= 0).sum(axis=1), 1)
    pick = (rng.random((len(rest), k)) * n_valid[:, None]).astype(np.int64)
    # Valid entries come first in each padded row.
    return np.maximum(np.take_along_axis(rest, pick, axis=1), 0)


def pad(sets: Sequence[np.ndarray], width: int | None = None) -> np.ndarray:
    width = width or max((len(s) for s in sets), default=1)
    out = np.full((len(sets), max(width, 1)), -1, dtype=np.int64)
    for i, s in enumerate(sets):
        out[i, : len(s)] = s[:width]
    return out
