"""The bundle composer: beam search over candidate items under hard constraints (no torch).

Constraints (`BundleConstraints`): a size range, a budget on the sum of prices, items in stock, at
most one item per leaf category unless the leaf is allowed to repeat (complements, not
substitutes), anchor items that must be in the bundle, items to exclude. `check_bundle` is the one
definition of "satisfies every constraint"; the composer only returns bundles it accepts.

Search: states are sets of catalog rows, starting from the anchors (or from nothing). Each step
adds one candidate to every state of the beam; an extension is kept only when it still satisfies
the constraints *and* can still be completed to the minimum size within the budget. That test is
exact: with at most one item per restricted leaf, the cheapest completion takes the cheapest
eligible item of each unused leaf plus free items and keeps the k cheapest (a partition matroid:
greedy is optimal). So every state in the beam is completable, and the search returns a bundle
whenever one exists among the candidates; when none exists the result is empty with a reason.
States of a valid size are collected; the best distinct ones (objective, then rows, for
deterministic ties) are returned, at most `max_overlap` Jaccard overlap of non-anchor items
between any two (relaxed to "different sets" when too few remain), and never more than
`max_shared` non-anchor items in common (not relaxed: fewer bundles rather than near-copies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from recs.errors import ConfigError

ALL_LEAVES = "*"  # allow_same_leaf entry: every leaf may repeat
_EPS = 1e-9


@dataclass(frozen=True)
class BundleConstraints:
    min_size: int = 2
    max_size: int = 4
    budget: float | None = None  # sum of prices; items without a price never fit a budget
    in_stock_only: bool = True
    allow_same_leaf: frozenset[str] = frozenset()  # leaf categories that may repeat ("*": all)
    anchors: tuple[str, ...] = ()  # item ids that must be in the bundle
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("min_size", "max_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_size < self.min_size:
            raise ConfigError(f"size range {self.min_size}-{self.max_size}: the maximum is below the minimum")
        if self.budget is not None and not (np.isfinite(self.budget) and self.budget >= 0):
            raise ConfigError(f"budget must be a non-negative number, got {self.budget!r}")
        object.__setattr__(self, "anchors", tuple(dict.fromkeys(self.anchors)))
        object.__setattr__(self, "exclude", frozenset(self.exclude))
        object.__setattr__(self, "allow_same_leaf", frozenset(self.allow_same_leaf))

    def leaf_may_repeat(self, leaf: str) -> bool:
        return not leaf or ALL_LEAVES in self.allow_same_leaf or leaf in self.allow_same_leaf


@dataclass
class ItemTable:
    """What the constraints read about each catalog row."""

    item_ids: list[str]
    titles: list[str]
    prices: np.ndarray  # float64, NaN: unknown
    in_stock: np.ndarray  # bool
    leaves: list[str]  # full category path, "" when none
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.row_of:
            self.row_of = {item: row for row, item in enumerate(self.item_ids)}
        self.prices = np.asarray(self.prices, dtype=np.float64)
        self.in_stock = np.asarray(self.in_stock, dtype=bool)

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_items(cls, items: pl.DataFrame) -> ItemTable:
        n = items.height
        prices = items["price"].cast(pl.Float64).fill_null(float("nan")).to_numpy() if "price" in items.columns else np.full(n, np.nan)
        stock = items["in_stock"].fill_null(True).to_numpy() if "in_stock" in items.columns else np.ones(n, bool)
        leaves = items["category"].fill_null("").to_list() if "category" in items.columns else [""] * n
        return cls(items["item_id"].to_list(), items["title"].to_list(), prices, stock, [str(x).strip() for x in leaves])

    def price(self, row: int) -> float | None:
        p = float(self.prices[row])
        return p if np.isfinite(p) else None


def check_bundle(rows: Sequence[int], table: ItemTable, constraints: BundleConstraints) -> list[str]:
    """Every constraint the bundle violates, in words (empty: it satisfies them all)."""
    rows = [int(r) for r in rows]
    problems: list[str] = []
    if len(set(rows)) != len(rows):
        problems.append("an item appears twice")
    size = len(set(rows))
    if not constraints.min_size <= size <= constraints.max_size:
        problems.append(f"size {size} outside {constraints.min_size}-{constraints.max_size}")
    ids = {table.item_ids[r] for r in rows}
    problems += [f"anchor {a} missing" for a in constraints.anchors if a not in ids]
    problems += [f"{table.item_ids[r]} is excluded" for r in rows if table.item_ids[r] in constraints.exclude]
    if constraints.in_stock_only:
        problems += [f"{table.item_ids[r]} is out of stock" for r in rows if not table.in_stock[r]]
    if constraints.budget is not None:
        prices = table.prices[rows] if rows else np.zeros(0)
        if not np.all(np.isfinite(prices)):
            problems.append("an item has no price, so the budget cannot be checked")
        elif float(prices.sum()) > constraints.budget + _EPS:
            problems.append(f"total {float(prices.sum()):.2f} over budget {constraints.budget:.2f}")
    seen: dict[str, int] = {}
    for r in rows:
        leaf = table.leaves[r]
        if constraints.leaf_may_repeat(leaf):
            continue
        if leaf in seen:
            problems.append(f"{table.item_ids[seen[leaf]]} and {table.item_ids[r]} share leaf category {leaf}")
        seen.setdefault(leaf, r)
    return problems


@dataclass
class ComposedBundle:
    rows: tuple[int, ...]  # anchors first, then in the order they were added
    objective: float
    set_logit: float
    relevance: float


@dataclass
class ComposeResult:
    bundles: list[ComposedBundle]
    reason: str | None = None  # why the list is empty


# The scorer: set logits of sets of rows (a batch), higher = goes together better.
SetScoreFn = Callable[[list[tuple[int, ...]]], np.ndarray]


class _Pool:
    """Eligible candidates, with the leaf/price arrays the completability test needs."""

    def __init__(self, rows: np.ndarray, table: ItemTable, constraints: BundleConstraints) -> None:
        self.rows = rows
        self.prices = table.prices[rows] if len(rows) else np.zeros(0)
        leaf_index: dict[str, int] = {}
        # Restricted leaves get an id >= 0; items whose leaf may repeat get -1 (no limit).
        self.leaf = np.array(
            [-1 if constraints.leaf_may_repeat(table.leaves[r]) else leaf_index.setdefault(table.leaves[r], len(leaf_index)) for r in rows],
            dtype=np.int64,
        )
        self.leaf_of_name = leaf_index
        self.n_leaves = len(leaf_index)
        self.position = {int(r): i for i, r in enumerate(rows)}

    def cheapest_completion(self, used: np.ndarray, used_leaves: np.ndarray, k: int, with_budget: bool) -> float:
        """Least total price of k more items (inf when impossible); count-only without a budget."""
        if k <= 0:
            return 0.0
        free = ~used
        free &= ~((self.leaf >= 0) & used_leaves[np.maximum(self.leaf, 0)]) if self.n_leaves else free
        idx = np.flatnonzero(free)
        if not len(idx):
            return float("inf")
        unlimited = idx[self.leaf[idx] < 0]
        limited = idx[self.leaf[idx] >= 0]
        if with_budget:
            prices = self.prices
            best = np.full(self.n_leaves, np.inf)
            np.minimum.at(best, self.leaf[limited], prices[limited])
            options = np.concatenate([prices[unlimited], best[np.isfinite(best)]])
            if len(options) < k:
                return float("inf")
            return float(np.sort(options)[:k].sum())
        n_options = len(unlimited) + len(np.unique(self.leaf[limited]))
        return 0.0 if n_options >= k else float("inf")


def compose(
    table: ItemTable,
    candidates: Sequence[int],
    constraints: BundleConstraints,
    score_sets: SetScoreFn,
    relevance: np.ndarray | None = None,
    relevance_weight: float = 0.0,
    n: int = 3,
    beam_width: int = 10,
    max_overlap: float = 0.5,
    max_shared: int | None = None,
    relevance_of: Literal["members", "added"] = "members",
) -> ComposeResult:
    """Up to `n` distinct bundles from anchors + `candidates` (catalog rows) maximising
    set logit + relevance_weight * mean relevance (per-row array, e.g. z-scored user scores)
    over the bundle's members, or over its added items only (`relevance_of="added"`)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if beam_width < 1:
        raise ConfigError(f"beam width must be positive, got {beam_width}")
    c = constraints
    unknown = [a for a in c.anchors if a not in table.row_of]
    if unknown:
        raise ConfigError(f"unknown anchor item(s): {', '.join(unknown)}")
    anchors = tuple(table.row_of[a] for a in c.anchors)
    reason = _anchor_problem(anchors, table, c)
    if reason:
        return ComposeResult([], reason)

    anchor_cost = float(table.prices[list(anchors)].sum()) if anchors and c.budget is not None else 0.0
    anchor_leaves = {table.leaves[r] for r in anchors if not c.leaf_may_repeat(table.leaves[r])}
    eligible: list[int] = []
    for r in dict.fromkeys(int(x) for x in candidates):
        if r in anchors or not 0 <= r < len(table):
            continue
        if table.item_ids[r] in c.exclude or (c.in_stock_only and not table.in_stock[r]):
            continue
        if c.budget is not None and not (np.isfinite(table.prices[r]) and anchor_cost + table.prices[r] <= c.budget + _EPS):
            continue
        if table.leaves[r] in anchor_leaves:
            continue
        eligible.append(r)
    pool = _Pool(np.asarray(sorted(eligible), dtype=np.int64), table, c)
    used_leaves0 = np.zeros(pool.n_leaves, dtype=bool)
    budget_left = np.inf if c.budget is None else c.budget - anchor_cost
    need = max(0, c.min_size - len(anchors))
    least = pool.cheapest_completion(np.zeros(len(pool.rows), bool), used_leaves0, need, c.budget is not None)
    if not np.isfinite(least) or least > budget_left + _EPS:
        return ComposeResult([], _shortfall_reason(pool, need, least, budget_left, c, len(eligible), len(anchors)))

    rel = np.zeros(len(table)) if relevance is None else np.asarray(relevance, dtype=np.float64)
    anchor_set = set(anchors)

    def objective(states: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = np.asarray(score_sets(states), dtype=np.float64)
        if relevance_of == "added":
            mean_rel = np.array([rel[added].mean() if (added := [r for r in s if r not in anchor_set]) else 0.0 for s in states])
        else:
            mean_rel = np.array([rel[list(s)].mean() if s else 0.0 for s in states])
        return logits + relevance_weight * mean_rel, logits, mean_rel

    finished: dict[tuple[int, ...], ComposedBundle] = {}

    def add_finished(states: list[tuple[int, ...]], obj: np.ndarray, logits: np.ndarray, mean_rel: np.ndarray) -> None:
        for s, o, lg, mr in zip(states, obj, logits, mean_rel, strict=True):
            key = tuple(sorted(s))
            if c.min_size <= len(s) <= c.max_size and key not in finished and not check_bundle(s, table, c):
                finished[key] = ComposedBundle(s, float(o), float(lg), float(mr))

    beam: list[tuple[int, ...]] = [anchors]
    if len(anchors) >= c.min_size:
        add_finished(beam, *objective(beam))
    for _size in range(len(anchors), c.max_size):
        expansions: dict[tuple[int, ...], tuple[int, ...]] = {}
        for state in beam:
            used = np.zeros(len(pool.rows), dtype=bool)
            used_leaves = used_leaves0.copy()
            spent = 0.0
            for r in state:
                if r in pool.position:
                    used[pool.position[r]] = True
                    leaf = pool.leaf[pool.position[r]]
                    if leaf >= 0:
                        used_leaves[leaf] = True
                    spent += float(pool.prices[pool.position[r]]) if c.budget is not None else 0.0
            for i in np.flatnonzero(~used):
                leaf = pool.leaf[i]
                if leaf >= 0 and used_leaves[leaf]:
                    continue
                cost = spent + (float(pool.prices[i]) if c.budget is not None else 0.0)
                if cost > budget_left + _EPS:
                    continue
                remaining = need - (len(state) - len(anchors)) - 1
                if remaining > 0:
                    used[i] = True
                    if leaf >= 0:
                        used_leaves[leaf] = True
                    more = pool.cheapest_completion(used, used_leaves, remaining, c.budget is not None)
                    used[i] = False
                    if leaf >= 0:
                        used_leaves[leaf] = False
                    if not np.isfinite(more) or cost + more > budget_left + _EPS:
                        continue  # cannot reach the minimum size within budget from here
                new = (*state, int(pool.rows[i]))
                expansions.setdefault(tuple(sorted(new)), new)
        if not expansions:
            break
        states = list(expansions.values())
        obj, logits, mean_rel = objective(states)
        add_finished(states, obj, logits, mean_rel)
        order = sorted(range(len(states)), key=lambda j: (-obj[j], tuple(sorted(states[j]))))
        beam = [states[j] for j in order[:beam_width]]

    if not finished:  # unreachable by construction; kept as a guard, never a wrong bundle
        return ComposeResult([], "no bundle satisfies the constraints")
    ranked = sorted(finished.items(), key=lambda kv: (-kv[1].objective, kv[0]))
    return ComposeResult(_pick_distinct([b for _, b in ranked], set(anchors), n, max_overlap, max_shared))


def _pick_distinct(
    ranked: list[ComposedBundle], anchors: set[int], n: int, max_overlap: float, max_shared: int | None = None
) -> list[ComposedBundle]:
    chosen: list[ComposedBundle] = []
    for strict in (True, False):
        for b in ranked:
            if len(chosen) >= n:
                return chosen
            mine = set(b.rows) - anchors
            others = [set(x.rows) - anchors for x in chosen]
            if any(set(b.rows) == set(x.rows) for x in chosen):
                continue
            if max_shared is not None and any(len(mine & o) > max_shared for o in others):
                continue
            if strict and any(_jaccard(mine, o) > max_overlap + _EPS for o in others):
                continue
            chosen.append(b)
    return chosen


def _jaccard(a: set[int], b: set[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _anchor_problem(anchors: tuple[int, ...], table: ItemTable, c: BundleConstraints) -> str | None:
    if len(anchors) > c.max_size:
        return f"{len(anchors)} anchor items do not fit a bundle of at most {c.max_size}"
    for r in anchors:
        item = table.item_ids[r]
        if item in c.exclude:
            return f"anchor {item} is also excluded"
        if c.in_stock_only and not table.in_stock[r]:
            return f"anchor {item} is out of stock"
        if c.budget is not None and not np.isfinite(table.prices[r]):
            return f"anchor {item} has no price, so no bundle with it fits a budget"
    seen: dict[str, int] = {}
    for r in anchors:
        leaf = table.leaves[r]
        if not c.leaf_may_repeat(leaf) and leaf in seen:
            return f"anchors {table.item_ids[seen[leaf]]} and {table.item_ids[r]} share leaf category {leaf}"
        seen.setdefault(leaf, r)
    if c.budget is not None and anchors:
        total = float(table.prices[list(anchors)].sum())
        if total > c.budget + _EPS:
            return f"the anchors cost {total:.2f}, over the budget {c.budget:.2f}"
    return None


def _shortfall_reason(pool: _Pool, need: int, least: float, budget_left: float, c: BundleConstraints, n_eligible: int, n_anchors: int) -> str:
    rules = ["in stock" if c.in_stock_only else None, "not excluded", "within budget" if c.budget is not None else None, "one per leaf category"]
    rules_text = ", ".join(r for r in rules if r)
    if not np.isfinite(least):
        return (
            f"no bundle is feasible: {n_anchors} anchor(s) + at most {_max_addable(pool)} of {n_eligible} candidate items "
            f"that fit ({rules_text}) < minimum size {c.min_size}"
        )
    return (
        f"no bundle is feasible: the cheapest {need} candidate item(s) that fit cost {least:.2f}, "
        f"over the {budget_left:.2f} left of the budget {c.budget:.2f}"
    )


def _max_addable(pool: _Pool) -> int:
    limited = pool.leaf[pool.leaf >= 0]
    return int((pool.leaf < 0).sum() + len(np.unique(limited)))
