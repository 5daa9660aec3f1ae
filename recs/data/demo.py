"""A synthetic but realistic demo shop: catalog, behaviour log and curated bundles.

The data is built so that the things `recs` claims to learn are really in it:

- item TEXT carries meaning: titles and descriptions are composed from per-category vocabularies
  (the taxonomy: package data, `demo_taxonomy.json` beside this module), so items of one leaf
  category read alike and differ in brand, size, material and features; price follows brand tier
  and size, and the description says "Premium" or "Budget-friendly" accordingly;
- complementarity: orders mix an anchor item with items from complementary leaves (`COMPLEMENTS`),
  and some complements follow in a later order;
- re-buying: consumables (coffee beans, pet food, shampoo, ink ...) are re-bought at a personal
  interval by the users who adopted them, durables are bought once;
- users have 1-3 interests, a budget band and a Zipf-like activity; sessions run view -> click ->
  cart -> purchase; item popularity is Zipf within a leaf;
- ~10% of items are out of stock (no carts or purchases after they ran out), ~8% are cold items
  first seen in the last three weeks (no event before `first_seen`, some bought after).

Everything is vectorised numpy; one `numpy.random.Generator` seeded once makes every output
byte-identical for a seed. No torch here (see DESIGN.md: nothing in `data/` imports torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

from recs.io import atomic_write_file

__all__ = [
    "COLD_DAYS",
    "COMPLEMENTS",
    "CONSUMABLES",
    "LEAVES",
    "PERIOD_DAYS",
    "PERIOD_START",
    "generate_demo_catalog",
    "generate_demo_shop",
    "write_demo_shop",
]

PERIOD_START = datetime(2025, 9, 1, tzinfo=UTC)
PERIOD_DAYS = 182  # about six months of behaviour
COLD_DAYS = 21  # cold items appear in the last three weeks

DAY = 86_400
_START_EPOCH = int(PERIOD_START.timestamp())
_END = PERIOD_DAYS * DAY  # all internal times are seconds since PERIOD_START
_NEVER = np.iinfo(np.int64).max // 4

# Sizes at scale=1; users, items and bundles scale linearly.
_ITEMS_PER_SCALE = 800
_USERS_PER_SCALE = 500
_BUNDLES_PER_SCALE = 40
_N_BANDS = 5  # budget bands (price quintiles within a leaf)


# ---------------------------------------------------------------------------------------------
# Taxonomy and vocabularies
# ---------------------------------------------------------------------------------------------


TAXONOMY_FILE = "demo_taxonomy.json"  # package data of recs.data


@dataclass(frozen=True)
class _Leaf:
    name: str  # leaf category, unique across the shop ("Tents")
    middle: str  # middle level of the category path ("Camping")
    nouns: tuple[str, ...]  # product types: "Dome Tent"
    variants: tuple[str, ...]  # sizes / capacities, ordered cheap -> expensive where it matters
    traits: tuple[str, ...]  # short title adjectives: "waterproof"
    materials: tuple[str, ...]  # material, flavour or finish: "polyester"
    features: tuple[str, ...]  # description phrases: "taped seams"
    price: tuple[float, float]  # price range of the leaf
    rebuy_days: tuple[int, int] | None = None  # consumable: range of personal re-buy intervals
    theme: str = ""  # bundle theme when this leaf anchors a bundle
    made: str = "Made of {}."  # description sentence for the material slot
    uses: tuple[str, ...] = ()  # what it is for; the top's uses when empty


@dataclass(frozen=True)
class _Top:
    name: str
    brands: tuple[str, ...]  # ordered budget -> premium (brand tier drives price)
    adjectives: tuple[str, ...]
    uses: tuple[str, ...]
    theme: str  # default bundle theme
    leaves: tuple[_Leaf, ...]


def _from_json(cls: type, record: dict, where: str) -> dict:
    """The keyword arguments of `cls` in `record` (lists as tuples); unknown keys are refused."""
    names = set(cls.__dataclass_fields__)
    unknown = set(record) - names
    if unknown:
        raise ValueError(f"{TAXONOMY_FILE}: {where}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}


def _load_taxonomy() -> tuple[tuple[_Top, ...], tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]]:
    """(tops with their leaves, complementary leaf edges, bundle title prefixes) from the JSON file
    shipped in the package (see DESIGN.md: data, not code)."""
    data = json.loads(resources.files("recs.data").joinpath(TAXONOMY_FILE).read_text(encoding="utf-8"))
    tops = []
    for top in data["tops"]:
        leaves = tuple(_Leaf(**_from_json(_Leaf, leaf, f"leaf {leaf.get('name')!r}")) for leaf in top["leaves"])
        tops.append(_Top(**_from_json(_Top, {**top, "leaves": leaves}, f"top {top.get('name')!r}")))
    edges = tuple((leaf, tuple(others)) for leaf, others in data["complements"].items())
    return tuple(tops), edges, tuple(data["bundle_prefixes"])


# Complementary leaf pairs (bought together, not substitutes) are symmetrised into COMPLEMENTS.
_TOPS, _COMPLEMENT_EDGES, _BUNDLE_PREFIXES = _load_taxonomy()

_ALL: tuple[tuple[_Top, _Leaf], ...] = tuple((top, leaf) for top in _TOPS for leaf in top.leaves)
_PATH: dict[str, str] = {leaf.name: f"{top.name} > {leaf.middle} > {leaf.name}" for top, leaf in _ALL}

# Every leaf category path, in taxonomy order (the `category` column of items.csv).
LEAVES: tuple[str, ...] = tuple(_PATH[leaf.name] for _, leaf in _ALL)


def _symmetrise() -> dict[str, tuple[str, ...]]:
    neighbours: dict[str, list[str]] = {path: [] for path in LEAVES}
    for a, bs in _COMPLEMENT_EDGES:
        for b in bs:
            for x, y in ((a, b), (b, a)):
                if _PATH[y] not in neighbours[_PATH[x]]:
                    neighbours[_PATH[x]].append(_PATH[y])
    return {path: tuple(sorted(ns)) for path, ns in neighbours.items()}


# Leaf category path -> complementary leaf category paths (symmetric; keys are items' `category`).
COMPLEMENTS: dict[str, tuple[str, ...]] = _symmetrise()
# Leaf category paths of consumables (re-bought at a personal interval).
CONSUMABLES: tuple[str, ...] = tuple(_PATH[leaf.name] for _, leaf in _ALL if leaf.rebuy_days)


# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------


class _GroupedCategorical:
    """Draws one entry from a chosen group; groups are contiguous runs of entries.

    Each group's CDF is shifted by its group number and all are concatenated, so one
    `searchsorted(cdf, group + u)` draws for a whole batch of (possibly different) groups.
    """

    def __init__(self, weights: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        cdf = np.empty(len(weights), dtype=np.float64)
        for g, (s, e) in enumerate(zip(starts, ends, strict=True)):
            cum = np.cumsum(weights[s:e], dtype=np.float64)
            cdf[s:e] = g + cum / cum[-1]
            cdf[e - 1] = g + 1.0
        self.cdf, self.starts, self.ends = cdf, starts, ends

    def draw(self, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        idx = np.searchsorted(self.cdf, group + rng.random(len(group)), side="right")
        # g + u can round up to g + 1 when u is within an ulp of 1: keep the draw inside its group.
        return np.clip(idx, self.starts[group], self.ends[group] - 1)


def _draw_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a non-negative (n, k) weight matrix."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _uniform_int(low: np.ndarray | int, high: np.ndarray | int, rng: np.random.Generator, n: int) -> np.ndarray:
    """Integers uniform in [low, high) (high > low), vectorised over array bounds."""
    low = np.broadcast_to(np.asarray(low, dtype=np.int64), (n,))
    high = np.broadcast_to(np.asarray(high, dtype=np.int64), (n,))
    return low + (rng.random(n) * (high - low)).astype(np.int64)


# Share of sessions starting in each hour of the day (UTC): quiet nights, evening peak.
_HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3.0, 3.2, 3.0, 2.8, 2.8, 3.0, 3.4, 4.0, 4.6, 4.8, 4.2, 3.0, 1.8]
)
_HOUR_CDF = np.cumsum(_HOUR_WEIGHTS) / _HOUR_WEIGHTS.sum()


def _session_times(low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A time in [low, high) seconds on a random day, at a realistic hour of that day."""
    n = len(low)
    day_lo = low // DAY
    day_hi = np.maximum((high - 1) // DAY, day_lo)
    day = _uniform_int(day_lo, day_hi + 1, rng, n)
    hour = np.minimum(np.searchsorted(_HOUR_CDF, rng.random(n), side="right"), 23)
    t = day * DAY + hour * 3600 + (rng.random(n) * 3600).astype(np.int64)
    # Days at the edges may put the hour outside the window: clamp (rare, keeps bounds exact).
    return np.clip(t, low, np.maximum(high - 1, low))


# ---------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------


@dataclass
class _Catalog:
    leaf: np.ndarray  # leaf index per item; items are stored leaf-contiguous
    leaf_start: np.ndarray
    leaf_end: np.ndarray
    code: np.ndarray  # public numeric id (I00042), a permutation so ids do not reveal the leaf
    price: np.ndarray
    quantile: np.ndarray  # price position within the leaf, 0 cheap .. 1 expensive
    pop: np.ndarray  # Zipf popularity within the leaf
    available_from: np.ndarray  # seconds; first_seen at midnight
    sellable_until: np.ndarray  # seconds; out-of-stock items stopped selling here
    in_stock: np.ndarray
    cold: np.ndarray
    title: list[str]
    description: list[str]
    brand: list[str]

    @property
    def n(self) -> int:
        return len(self.leaf)


def _build_catalog(rng: np.random.Generator, scale: float) -> _Catalog:
    n_leaves = len(_ALL)
    share = rng.dirichlet(np.full(n_leaves, 12.0))
    sizes = np.maximum(4, np.round(_ITEMS_PER_SCALE * scale * share)).astype(np.int64)
    leaf_end = np.cumsum(sizes)
    leaf_start = leaf_end - sizes
    n = int(leaf_end[-1])
    leaf = np.repeat(np.arange(n_leaves), sizes)

    # Zipf popularity within each leaf, on a random rank order.
    rank = np.empty(n, dtype=np.int64)
    for s, e in zip(leaf_start, leaf_end, strict=True):
        rank[s:e] = rng.permutation(e - s)
    pop = 1.0 / (rank + 1.0) ** 1.05

    # Price: brand tier and a random part decide the position in the leaf's (log) price range.
    brand_idx = rng.integers(0, 6, size=n)
    quantile = np.clip(0.55 * brand_idx / 5 + 0.45 * rng.random(n), 0.0, 1.0)
    lo = np.array([leaf_.price[0] for _, leaf_ in _ALL])[leaf]
    hi = np.array([leaf_.price[1] for _, leaf_ in _ALL])[leaf]
    raw = lo * (hi / lo) ** quantile
    # Shop-style prices: x.99 above 10, cents below; never <= 0.
    price = np.where(raw >= 10, np.floor(raw) + 0.99, np.round(raw, 2))
    price = np.maximum(np.round(price, 2), 0.99)

    # first_seen: most items existed before the period, ~10% launched during it, ~8% are cold.
    u = rng.random(n)
    cold = u < 0.08
    launched = (u >= 0.08) & (u < 0.18)
    first_day = -rng.integers(1, 730, size=n)
    first_day = np.where(launched, rng.integers(0, PERIOD_DAYS - COLD_DAYS - 14, size=n), first_day)
    first_day = np.where(cold, rng.integers(PERIOD_DAYS - COLD_DAYS, PERIOD_DAYS - 3, size=n), first_day)
    available_from = first_day.astype(np.int64) * DAY

    # ~10% out of stock (never a cold item); they stopped selling 10-45 days before the end.
    in_stock = ~((rng.random(n) < 0.11) & ~cold)
    stop = _END - rng.integers(10, 46, size=n).astype(np.int64) * DAY
    sellable_until = np.where(in_stock, _NEVER, np.maximum(stop, available_from + 7 * DAY))

    title, description, brand = _texts(rng, leaf, brand_idx, quantile)
    code = rng.permutation(n)
    return _Catalog(
        leaf=leaf,
        leaf_start=leaf_start,
        leaf_end=leaf_end,
        code=code,
        price=price,
        quantile=quantile,
        pop=pop,
        available_from=available_from,
        sellable_until=sellable_until,
        in_stock=in_stock,
        cold=cold,
        title=title,
        description=description,
        brand=brand,
    )


def _article(word: str) -> str:
    return "An" if word[0].lower() in "aeiou" else "A"


def _pick(options: tuple[str, ...], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _texts(
    rng: np.random.Generator, leaf: np.ndarray, brand_idx: np.ndarray, quantile: np.ndarray
) -> tuple[list[str], list[str], list[str]]:
    """Titles like "TrailPeak 2-Person Dome Tent, waterproof polyester" and a matching description."""
    n = len(leaf)
    u = rng.random((n, 8))
    # Bigger variants cost more: the variant follows the price quantile, with some noise.
    variant_u = np.clip(quantile + rng.normal(0, 0.15, n), 0, 0.999)
    titles: list[str] = []
    descriptions: list[str] = []
    brands: list[str] = []
    for i in range(n):
        top, lf = _ALL[leaf[i]]
        b = top.brands[brand_idx[i]]
        noun = _pick(lf.nouns, u[i, 0])
        variant = _pick(lf.variants, variant_u[i])
        trait = _pick(lf.traits, u[i, 1])
        material = _pick(lf.materials, u[i, 2])
        f1 = _pick(lf.features, u[i, 3])
        f2 = _pick(tuple(f for f in lf.features if f != f1), u[i, 4])
        use = _pick(lf.uses or top.uses, u[i, 5])
        q = quantile[i]
        tier = "Premium" if q > 0.75 else "Budget-friendly" if q < 0.25 else _pick(top.adjectives, u[i, 6])
        titles.append(f"{b} {variant} {noun}, {trait} {material}")
        descriptions.append(
            f"{tier} {variant} {noun} by {b.rstrip('.')}. {lf.made.format(material)} "
            f"Features {f1} and {f2}. {_article(trait)} {trait} choice for {use}."
        )
        brands.append(b)
    return titles, descriptions, brands


# ---------------------------------------------------------------------------------------------
# Users and item sampling
# ---------------------------------------------------------------------------------------------


@dataclass
class _Users:
    interest: np.ndarray  # (n_users, n_tops) weights, rows sum to 1
    band: np.ndarray  # budget band 0..4
    join: np.ndarray  # seconds; first possible activity
    activity: np.ndarray  # >= 1, heavy-tailed

    @property
    def n(self) -> int:
        return len(self.band)


def _build_users(rng: np.random.Generator, scale: float) -> _Users:
    n = max(20, round(_USERS_PER_SCALE * scale))
    n_tops = len(_TOPS)
    top_pop = 1.0 / (1.0 + rng.permutation(n_tops)) ** 0.7  # skewed category popularity
    k = rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20], size=n)
    keys = np.log(top_pop) + rng.gumbel(size=(n, n_tops))  # Gumbel top-k: k tops without replacement
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    interest = np.where(rank < k[:, None], rng.exponential(size=(n, n_tops)) + 0.3, 0.0)
    interest /= interest.sum(axis=1, keepdims=True)
    band = np.minimum((rng.beta(2.0, 2.0, size=n) * _N_BANDS).astype(np.int64), _N_BANDS - 1)
    late = rng.random(n) < 0.3
    join = np.where(late, (rng.random(n) * 0.5 * _END).astype(np.int64), 0)
    activity = 1.0 + rng.pareto(2.2, size=n)  # Zipf-like: most users light, a few very active
    return _Users(interest=interest, band=band, join=join, activity=activity)


class _ItemSampler:
    """Draws items of a leaf for a user's budget band, valid at a time (rejection on availability).

    `view` weights are flatter (people look around), `buy` weights follow popularity and budget
    closely. New arrivals (cold items) are promoted, so they get bought soon after first_seen.
    """

    def __init__(self, cat: _Catalog) -> None:
        self.cat = cat
        centres = (np.arange(_N_BANDS) + 0.5) / _N_BANDS
        novelty = np.where(cat.cold, 3.0, 1.0)
        self.tables: dict[tuple[bool, int], _GroupedCategorical] = {}
        for buy, sigma, alpha in ((False, 0.45, 0.6), (True, 0.2, 1.0)):
            for b, c in enumerate(centres):
                w = cat.pop**alpha * (np.exp(-((cat.quantile - c) ** 2) / (2 * sigma**2)) + 0.03) * novelty
                self.tables[(buy, b)] = _GroupedCategorical(w, cat.leaf_start, cat.leaf_end)

    def valid(self, item: np.ndarray, t: np.ndarray, buy: bool) -> np.ndarray:
        ok = self.cat.available_from[item] <= t
        if buy:
            ok &= t < self.cat.sellable_until[item]
        return ok

    def draw(
        self, leaf: np.ndarray, band: np.ndarray, t: np.ndarray, buy: bool, rng: np.random.Generator
    ) -> np.ndarray:
        """Item index per row, or -1 where no valid item was found."""
        out = np.full(len(leaf), -1, dtype=np.int64)
        pending = np.arange(len(leaf))
        for _ in range(25):
            if len(pending) == 0:
                break
            got = np.empty(len(pending), dtype=np.int64)
            for b in range(_N_BANDS):
                m = band[pending] == b
                if m.any():
                    got[m] = self.tables[(buy, b)].draw(leaf[pending[m]], rng)
            ok = self.valid(got, t[pending], buy)
            out[pending[ok]] = got[ok]
            pending = pending[~ok]
        return out


# ---------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------

_VIEW, _CLICK, _CART, _PURCHASE = 0, 1, 2, 3


class _Log:
    """Collects event columns as numpy chunks; orders get provisional ids renumbered at the end."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, ...]] = []
        self.next_order = 0

    def add(
        self,
        user: np.ndarray,
        item: np.ndarray,
        t: np.ndarray,
        kind: int | np.ndarray,
        order: np.ndarray | None = None,
        qty: np.ndarray | None = None,
    ) -> None:
        n = len(user)
        kind_arr = np.broadcast_to(np.asarray(kind, dtype=np.int8), (n,)).copy()
        order = np.full(n, -1, dtype=np.int64) if order is None else order.astype(np.int64)
        qty = np.zeros(n, dtype=np.int64) if qty is None else qty.astype(np.int64)
        self.chunks.append((user.astype(np.int64), item.astype(np.int64), t.astype(np.int64), kind_arr, order, qty))

    def new_orders(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_order, self.next_order + n, dtype=np.int64)
        self.next_order += n
        return ids

    def columns(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate([c[i] for c in self.chunks]) for i in range(6))


@dataclass
class _Ctx:
    rng: np.random.Generator
    cat: _Catalog
    users: _Users
    sampler: _ItemSampler
    log: _Log
    comp_table: np.ndarray  # (n_leaves, max_complements) leaf indices, -1 padded
    comp_count: np.ndarray
    leaf_cdf: _GroupedCategorical  # leaf within a top (leaf popularity)
    consumable: np.ndarray  # bool per leaf


def _complement_tables() -> tuple[np.ndarray, np.ndarray]:
    index = {path: i for i, path in enumerate(LEAVES)}
    width = max(len(v) for v in COMPLEMENTS.values())
    table = np.full((len(LEAVES), width), -1, dtype=np.int64)
    count = np.zeros(len(LEAVES), dtype=np.int64)
    for path, comps in COMPLEMENTS.items():
        row = [index[c] for c in comps]
        table[index[path], : len(row)] = row
        count[index[path]] = len(row)
    return table, count


def _pick_complement_leaves(ctx: _Ctx, leaf: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Up to k distinct complementary leaves per row: (row index, leaf) pairs."""
    cand = ctx.comp_table[leaf]
    keys = np.where(cand >= 0, ctx.rng.random(cand.shape), 2.0)
    order = np.argsort(keys, axis=1, kind="stable")
    shuffled = np.take_along_axis(cand, order, axis=1)
    take = np.arange(cand.shape[1])[None, :] < np.minimum(k, ctx.comp_count[leaf])[:, None]
    rows = np.broadcast_to(np.arange(len(leaf))[:, None], cand.shape)
    return rows[take], shuffled[take]


def _interest_leaves(ctx: _Ctx, user: np.ndarray, explore: float) -> np.ndarray:
    """A leaf per row: a top from the user's interests (or, with prob `explore`, any top)."""
    w = ctx.users.interest[user]
    w = (1 - explore) * w + explore / w.shape[1]
    top = _draw_rows(w, ctx.rng)
    return ctx.leaf_cdf.draw(top, ctx.rng)


def _quantities(ctx: _Ctx, item: np.ndarray) -> np.ndarray:
    consumable = ctx.consumable[ctx.cat.leaf[item]]
    u = ctx.rng.random(len(item))
    several = np.where(consumable, (u > 0.7).astype(np.int64) + (u > 0.92), (u > 0.96).astype(np.int64))
    return 1 + several


def _orders(ctx: _Ctx, user: np.ndarray, t: np.ndarray, anchor_leaf: np.ndarray, n_comp: np.ndarray) -> np.ndarray:
    """Purchase sessions: browse substitutes of the anchor, buy it with complements.

    Returns the anchor leaf per placed order (for follow-ups), -1 where no order was placed.
    """
    rng, cat, log, band = ctx.rng, ctx.cat, ctx.log, ctx.users.band[user]
    n = len(user)
    duration = _uniform_int(5 * 60, 45 * 60, rng, n)
    start = np.maximum(t - duration, ctx.users.join[user])
    # Items are drawn valid at session start, so every event of the session is after first_seen.
    anchor = ctx.sampler.draw(anchor_leaf, band, start, buy=True, rng=rng)
    anchor = np.where(ctx.sampler.valid(np.maximum(anchor, 0), t, buy=True), anchor, -1)
    placed = anchor >= 0
    order_id = np.full(n, -1, dtype=np.int64)
    order_id[placed] = log.new_orders(int(placed.sum()))

    # Members: the anchor, complements from complementary leaves, rarely a second substitute.
    rows, comp_leaf = _pick_complement_leaves(ctx, anchor_leaf, n_comp)
    comp_item = ctx.sampler.draw(comp_leaf, band[rows], start[rows], buy=True, rng=rng)
    extra_rows = np.flatnonzero((rng.random(n) < 0.04) & (n_comp < 4))  # orders stay at <= 5 items
    extra_item = ctx.sampler.draw(anchor_leaf[extra_rows], band[extra_rows], start[extra_rows], buy=True, rng=rng)
    m_row = np.concatenate([np.arange(n), rows, extra_rows])
    m_item = np.concatenate([anchor, comp_item, extra_item])
    m_role = np.concatenate([np.zeros(n), np.ones(len(rows)), np.full(len(extra_rows), 2)]).astype(np.int64)
    keep = (m_item >= 0) & placed[m_row]
    keep &= ctx.sampler.valid(np.maximum(m_item, 0), t[m_row], buy=True)
    m_row, m_item, m_role = m_row[keep], m_item[keep], m_role[keep]
    # One line per item in an order.
    _, first = np.unique(m_row * (cat.n + 1) + m_item, return_index=True)
    first.sort()
    m_row, m_item, m_role = m_row[first], m_item[first], m_role[first]

    # Funnel per member: view (anchor always), click, cart, then the purchase at t.
    span = t[m_row] - start[m_row]
    u = rng.random((len(m_row), 3))
    v_t = start[m_row] + (u[:, 0] * 0.5 * span).astype(np.int64)
    c_t = v_t + (u[:, 1] * 0.2 * span).astype(np.int64)
    k_t = start[m_row] + ((0.75 + 0.2 * u[:, 2]) * span).astype(np.int64)
    viewed = (m_role != 1) | (rng.random(len(m_row)) < 0.6)
    clicked = viewed & ((m_role == 0) | (rng.random(len(m_row)) < 0.5))
    mu = user[m_row]
    log.add(mu[viewed], m_item[viewed], v_t[viewed], _VIEW)
    log.add(mu[clicked], m_item[clicked], c_t[clicked], _CLICK)
    log.add(mu, m_item, k_t, _CART)
    log.add(mu, m_item, t[m_row], _PURCHASE, order=order_id[m_row], qty=_quantities(ctx, m_item))

    # Browsed substitutes in the anchor's leaf, some clicked: the session's context.
    n_browse = rng.poisson(1.6, size=n) * placed
    b_row = np.repeat(np.arange(n), n_browse)
    b_item = ctx.sampler.draw(anchor_leaf[b_row], band[b_row], start[b_row], buy=False, rng=rng)
    ok = b_item >= 0
    b_row, b_item = b_row[ok], b_item[ok]
    span = t[b_row] - start[b_row]
    b_t = start[b_row] + (rng.random(len(b_row)) * 0.6 * span).astype(np.int64)
    log.add(user[b_row], b_item, b_t, _VIEW)
    click = rng.random(len(b_row)) < 0.35
    log.add(user[b_row][click], b_item[click], (b_t + 0.1 * span)[click].astype(np.int64), _CLICK)
    return np.where(placed, anchor_leaf, -1)


def _discovery(ctx: _Ctx) -> None:
    """Orders driven by interests: an anchor item, its complements, sometimes a follow-up order."""
    rng, users = ctx.rng, ctx.users
    count = np.clip(rng.poisson(1.4 * users.activity) + 1, 1, 60)
    user = np.repeat(np.arange(users.n), count)
    t = _session_times(users.join[user] + 3600, np.full(len(user), _END), rng)
    leaf = _interest_leaves(ctx, user, explore=0.08)
    n_comp = rng.choice([0, 1, 2, 3, 4], p=[0.3, 0.35, 0.2, 0.1, 0.05], size=len(user))
    placed_leaf = _orders(ctx, user, t, leaf, n_comp)

    # The tent today, the lantern next week: a later order from a complementary leaf.
    follow = np.flatnonzero((placed_leaf >= 0) & (rng.random(len(user)) < 0.3))
    rows, comp_leaf = _pick_complement_leaves(ctx, placed_leaf[follow], np.ones(len(follow), dtype=np.int64))
    f_user = user[follow][rows]
    f_t = t[follow][rows] + _uniform_int(DAY, 21 * DAY, rng, len(rows))
    inside = f_t < _END
    f_n_comp = (rng.random(len(rows)) < 0.25).astype(np.int64)
    _orders(ctx, f_user[inside], f_t[inside], comp_leaf[inside], f_n_comp[inside])


def _routines(ctx: _Ctx) -> None:
    """Consumables re-bought at a personal interval; sometimes the user switches product."""
    rng, cat, users, log = ctx.rng, ctx.cat, ctx.users, ctx.log
    leaf_top = np.array([_TOPS.index(top) for top, _ in _ALL])
    consumable_leaves = np.flatnonzero(ctx.consumable)
    # A consumable fits a user whose interests include its top or a complementary leaf's top.
    related = np.zeros((len(consumable_leaves), len(_TOPS)))
    for j, lf in enumerate(consumable_leaves):
        related[j, leaf_top[lf]] = 1
        for c in ctx.comp_table[lf][ctx.comp_table[lf] >= 0]:
            related[j, leaf_top[c]] = 1
    affinity = (users.interest @ related.T) > 0  # (n_users, n_consumables)
    adopt_p = np.where(affinity, 0.3, 0.01) * np.minimum(users.activity, 2.5)[:, None] / 1.5
    keys = np.where(rng.random(affinity.shape) < adopt_p, rng.random(affinity.shape), 2.0)
    top3 = np.argsort(keys, axis=1, kind="stable")[:, :3]
    chosen = np.take_along_axis(keys, top3, axis=1) < 2.0
    r_user = np.broadcast_to(np.arange(users.n)[:, None], top3.shape)[chosen]
    r_leaf = consumable_leaves[top3[chosen]]
    if len(r_user) == 0:
        return

    lo = np.array([lf.rebuy_days[0] if lf.rebuy_days else 0 for _, lf in _ALL])[r_leaf]
    hi = np.array([lf.rebuy_days[1] if lf.rebuy_days else 0 for _, lf in _ALL])[r_leaf]
    interval = (lo + rng.random(len(r_user)) * (hi - lo)) * DAY
    steps = int(np.ceil(PERIOD_DAYS / 7)) + 2
    gaps = interval[:, None] * np.clip(1 + rng.normal(0, 0.15, (len(r_user), steps)), 0.5, 1.6)
    first = users.join[r_user] + rng.random(len(r_user)) * (_END - users.join[r_user]) * 0.5
    times = (first[:, None] + np.cumsum(gaps, axis=1) - gaps[:, :1]).astype(np.int64)
    alive = np.cumprod(rng.random(times.shape) > 0.04, axis=1).astype(bool)  # some users stop
    # Same product each time, except an occasional switch (a new-to-user purchase in the leaf).
    switch = rng.random(times.shape) < 0.1
    switch[:, 0] = True
    segment_start = np.maximum.accumulate(np.where(switch, np.arange(steps)[None, :], 0), axis=1)
    r_band = np.broadcast_to(users.band[r_user][:, None], times.shape)
    cells_leaf = np.broadcast_to(r_leaf[:, None], times.shape)
    clamped = np.minimum(times, _END - 1)
    candidates = ctx.sampler.draw(cells_leaf.ravel(), r_band.ravel(), clamped.ravel(), buy=True, rng=rng)
    candidates = candidates.reshape(times.shape)
    item = np.take_along_axis(candidates, segment_start, axis=1)
    # When the usual product runs out of stock, the user switches to another one of the leaf.
    gone = ~ctx.sampler.valid(np.maximum(item, 0), clamped, buy=True) & (candidates >= 0)
    segment_start = np.maximum.accumulate(np.where(switch | gone, np.arange(steps)[None, :], 0), axis=1)
    item = np.take_along_axis(candidates, segment_start, axis=1)

    ok = (times < _END) & alive & (item >= 0)
    ok &= ctx.sampler.valid(np.maximum(item, 0), times, buy=True)
    user = np.broadcast_to(r_user[:, None], times.shape)[ok]
    item, t = item[ok], times[ok]
    order = log.new_orders(len(user))
    # A quick reorder: sometimes a look at the product page, a cart, the purchase.
    looked = rng.random(len(user)) < 0.4
    view_t = t - _uniform_int(120, 900, rng, len(user))
    looked &= view_t >= cat.available_from[item]
    log.add(user[looked], item[looked], view_t[looked], _VIEW)
    log.add(user, item, t - _uniform_int(30, 110, rng, len(user)), _CART)
    log.add(user, item, t, _PURCHASE, order=order, qty=_quantities(ctx, item))


def _browsing(ctx: _Ctx) -> None:
    """Sessions without a purchase: views in the user's interests (and their complements)."""
    rng, users, log = ctx.rng, ctx.users, ctx.log
    count = rng.poisson(1.6 * users.activity)
    s_user = np.repeat(np.arange(users.n), count)
    start = _session_times(users.join[s_user], np.full(len(s_user), _END - 3600), rng)
    leaf = _interest_leaves(ctx, s_user, explore=0.15)
    n_views = 1 + rng.poisson(2.0, size=len(s_user))
    v_session = np.repeat(np.arange(len(s_user)), n_views)
    v_leaf = leaf[v_session]
    # A third of the views wander to a complementary leaf ("customers also looked at").
    wander = np.flatnonzero(rng.random(len(v_session)) < 0.3)
    rows, comp_leaf = _pick_complement_leaves(ctx, v_leaf[wander], np.ones(len(wander), dtype=np.int64))
    v_leaf[wander[rows]] = comp_leaf
    v_user = s_user[v_session]
    v_t = start[v_session] + _uniform_int(0, 1800, rng, len(v_session))
    item = ctx.sampler.draw(v_leaf, users.band[v_user], start[v_session], buy=False, rng=rng)
    ok = item >= 0
    v_user, item, v_t = v_user[ok], item[ok], v_t[ok]
    log.add(v_user, item, v_t, _VIEW)
    click = rng.random(len(item)) < 0.3
    c_t = v_t + _uniform_int(5, 120, rng, len(item))
    log.add(v_user[click], item[click], c_t[click], _CLICK)
    # Abandoned carts (only for items still on sale).
    cart = click & (rng.random(len(item)) < 0.2)
    k_t = c_t + _uniform_int(10, 300, rng, len(item))
    cart &= ctx.sampler.valid(item, k_t, buy=True)
    log.add(v_user[cart], item[cart], k_t[cart], _CART)


def _bundles(ctx: _Ctx, scale: float) -> pl.DataFrame:
    """Curated bundles: a popular in-stock anchor plus 1-4 items from complementary leaves."""
    rng, cat = ctx.rng, ctx.cat
    n = max(4, round(_BUNDLES_PER_SCALE * scale))
    # Anchors favour leaves with many complements (tents, phones, dresses ...).
    leaf_w = ctx.comp_count.astype(np.float64) ** 1.5
    leaf = _draw_rows(np.broadcast_to(leaf_w, (n, len(leaf_w))), rng)
    band = rng.integers(0, _N_BANDS, size=n)
    now = np.full(n, _END - 1)
    anchor = ctx.sampler.draw(leaf, band, now, buy=True, rng=rng)
    size = np.minimum(rng.integers(1, 5, size=n), ctx.comp_count[leaf])
    rows, comp_leaf = _pick_complement_leaves(ctx, leaf, size)
    comp = ctx.sampler.draw(comp_leaf, band[rows], now[rows], buy=True, rng=rng)
    prefix = rng.integers(0, len(_BUNDLE_PREFIXES), size=n)
    members_of: list[list[int]] = [[int(a)] if a >= 0 else [] for a in anchor]
    for r, c in zip(rows, comp, strict=True):
        if c >= 0 and members_of[r] and c not in members_of[r]:
            members_of[r].append(int(c))

    bundle_ids: list[str] = []
    items: list[int] = []
    titles: list[str] = []
    width = max(4, len(str(n)))
    made = 0
    for b, members in enumerate(members_of):
        if len(members) < 2:  # no valid anchor or no complement on sale: not a bundle
            continue
        made += 1
        top, lf = _ALL[leaf[b]]
        title = f"{_BUNDLE_PREFIXES[prefix[b]]} {lf.theme or top.theme}"
        for m in members:
            bundle_ids.append(f"B{made:0{width}d}")
            items.append(int(cat.code[m]))
            titles.append(title)
    return pl.DataFrame({"bundle_id": bundle_ids, "item_code": np.array(items, dtype=np.int64), "title": titles})


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _ids(prefix: str, codes: pl.Expr, n: int, min_width: int) -> pl.Expr:
    """Zero-padded string ids ("I00042"), wide enough for `n` codes so they sort like numbers."""
    width = max(min_width, len(str(max(n - 1, 0))))
    return pl.concat_str([pl.lit(prefix), codes.cast(pl.Utf8).str.zfill(width)])


def generate_demo_shop(seed: int = 0, scale: float = 1.0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(items, events, bundles) of a synthetic shop; deterministic for a seed.

    At scale=1: ~800 items, 500 users, a few tens of thousands of events over six months from
    2025-09-01. `scale` multiplies users, items and bundles. Timestamps and dates are ISO strings,
    as written to CSV; events are sorted by (user_id, timestamp, funnel step, item_id).
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    cat = _build_catalog(rng, scale)
    users = _build_users(rng, scale)
    comp_table, comp_count = _complement_tables()

    # Leaf popularity within each top: some leaves (phones, dog food) draw more traffic.
    leaf_top = np.array([_TOPS.index(top) for top, _ in _ALL])
    top_start = np.searchsorted(leaf_top, np.arange(len(_TOPS)))
    top_end = np.append(top_start[1:], len(_ALL))
    leaf_w = rng.dirichlet(np.full(len(_ALL), 3.0)) + 0.02
    ctx = _Ctx(
        rng=rng,
        cat=cat,
        users=users,
        sampler=_ItemSampler(cat),
        log=_Log(),
        comp_table=comp_table,
        comp_count=comp_count,
        leaf_cdf=_GroupedCategorical(leaf_w, top_start, top_end),
        consumable=np.array([lf.rebuy_days is not None for _, lf in _ALL]),
    )
    _discovery(ctx)
    _routines(ctx)
    _browsing(ctx)

    items = _items_frame(cat)
    events = _events_frame(ctx)
    bundles = _bundles(ctx, scale)
    bundles = bundles.select(
        "bundle_id", _ids("I", pl.col("item_code"), cat.n, 5).alias("item_id"), "title"
    )
    return items, events, bundles


def generate_demo_catalog(seed: int = 0, scale: float = 1.0) -> pl.DataFrame:
    """The items of `generate_demo_shop(seed, scale)` alone (the same rows: the catalog is drawn
    first from the seeded generator), without users or events: catalogs of millions of items
    for index benchmarks, where simulating millions of users would dominate."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return _items_frame(_build_catalog(np.random.default_rng(seed), scale))


def _items_frame(cat: _Catalog) -> pl.DataFrame:
    first_seen = (
        pl.from_epoch(pl.Series(_START_EPOCH + cat.available_from), time_unit="s").dt.strftime("%Y-%m-%d")
    )
    frame = pl.DataFrame(
        {
            "code": cat.code,
            "title": cat.title,
            "description": cat.description,
            "category": [LEAVES[i] for i in cat.leaf],
            "brand": cat.brand,
            "price": cat.price,
            "in_stock": cat.in_stock,
            "first_seen": first_seen,
        }
    )
    return frame.sort("code").select(_ids("I", pl.col("code"), cat.n, 5).alias("item_id"), pl.exclude("code"))


def _events_frame(ctx: _Ctx) -> pl.DataFrame:
    user, item, t, kind, order, qty = ctx.log.columns()
    # Durables are bought once: a later purchase of the same durable by the same user is dropped
    # (its views and cart stay, as a second look that did not convert).
    durable_buy = (kind == _PURCHASE) & ~ctx.consumable[ctx.cat.leaf[item]]
    rows = np.flatnonzero(durable_buy)
    rows = rows[np.lexsort((t[rows], item[rows], user[rows]))]
    again = (user[rows][1:] == user[rows][:-1]) & (item[rows][1:] == item[rows][:-1])
    ok = np.ones(len(t), dtype=bool)
    ok[rows[1:][again]] = False
    # Safety net for the contract: nothing before an item's first_seen, nothing after the period.
    ok &= (t >= ctx.cat.available_from[item]) & (t >= 0) & (t < _END)
    user, item, t, kind, order, qty = (a[ok] for a in (user, item, t, kind, order, qty))
    code = ctx.cat.code[item]
    # Deterministic order; drop exact duplicates (same user, item, second and step).
    idx = np.lexsort((order, code, kind, t, user))
    user, code, t, kind, order, qty = (a[idx] for a in (user, code, t, kind, order, qty))
    dup = np.zeros(len(idx), dtype=bool)
    dup[1:] = (user[1:] == user[:-1]) & (code[1:] == code[:-1]) & (t[1:] == t[:-1]) & (kind[1:] == kind[:-1])
    user, code, t, kind, order, qty = (a[~dup] for a in (user, code, t, kind, order, qty))

    # Order ids in chronological order of placement.
    is_purchase = kind == _PURCHASE
    placed = np.unique(order[is_purchase])
    first_time = np.full(ctx.log.next_order, _NEVER, dtype=np.int64)
    np.minimum.at(first_time, order[is_purchase], t[is_purchase])
    first_user = np.zeros(ctx.log.next_order, dtype=np.int64)
    first_user[order[is_purchase]] = user[is_purchase]
    chrono = placed[np.lexsort((placed, first_user[placed], first_time[placed]))]
    number = np.full(ctx.log.next_order, -1, dtype=np.int64)
    number[chrono] = np.arange(1, len(chrono) + 1)
    order_number = np.where(is_purchase, number[np.maximum(order, 0)], -1)

    kinds = pl.Series(["view", "click", "cart", "purchase"])
    frame = pl.DataFrame(
        {
            "user": user,
            "code": code,
            "epoch": _START_EPOCH + t,
            "kind": kind.astype(np.int64),
            "order": order_number,
            "qty": qty,
        }
    )
    return frame.select(
        _ids("U", pl.col("user"), ctx.users.n, 4).alias("user_id"),
        _ids("I", pl.col("code"), ctx.cat.n, 5).alias("item_id"),
        pl.from_epoch("epoch", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
        pl.col("kind").replace_strict(list(range(4)), kinds.to_list(), return_dtype=pl.Utf8).alias("event"),
        pl.when(pl.col("order") >= 0)
        .then(_ids("O", pl.col("order"), len(chrono) + 1, 6))
        .otherwise(None)
        .alias("order_id"),
        pl.when(pl.col("order") >= 0).then(pl.col("qty")).otherwise(None).alias("quantity"),
    )


def write_demo_shop(out_dir: Path, seed: int = 0, scale: float = 1.0, items_only: bool = False) -> dict[str, Path]:
    """Generate the demo shop and write items.csv, events.csv, bundles.csv into `out_dir`
    (`items_only`: items.csv alone, see `generate_demo_catalog`).

    Each file is written to a temp file in `out_dir` and renamed into place, so a crash never
    leaves a half-written file. Returns {"items": path, "events": path, "bundles": path}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if items_only:
        frames = {"items": generate_demo_catalog(seed=seed, scale=scale)}
    else:
        items, events, bundles = generate_demo_shop(seed=seed, scale=scale)
        frames = {"items": items, "events": events, "bundles": bundles}
    paths = {name: out_dir / f"{name}.csv" for name in frames}
    for name, frame in frames.items():
        atomic_write_file(paths[name], lambda tmp, frame=frame: frame.write_csv(tmp, float_precision=2))
    return paths
