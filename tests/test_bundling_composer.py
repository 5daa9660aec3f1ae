"""The bundle composer: hard constraints (property-based), infeasibility reasons, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recs.bundling.composer import BundleConstraints, ItemTable, check_bundle, compose
from recs.errors import ConfigError

LEAVES = ["", "A > Tents", "A > Lanterns", "B > Mugs", "B > Coffee"]


@st.composite
def problems(draw: st.DrawFn) -> tuple[ItemTable, BundleConstraints, np.ndarray, list[int]]:
    n = draw(st.integers(min_value=1, max_value=10))
    prices = [draw(st.one_of(st.floats(min_value=0, max_value=100, allow_nan=False), st.none())) for _ in range(n)]
    table = ItemTable(
        item_ids=[f"I{i}" for i in range(n)],
        titles=[f"item {i}" for i in range(n)],
        prices=np.array([np.nan if p is None else p for p in prices]),
        in_stock=np.array([draw(st.integers(0, 9)) > 0 for _ in range(n)]),
        leaves=[draw(st.sampled_from(LEAVES)) for _ in range(n)],
    )
    ids = table.item_ids
    min_size = draw(st.integers(min_value=1, max_value=4))
    anchors = draw(st.lists(st.sampled_from(ids), max_size=2, unique=True))
    others = [i for i in ids if i not in anchors] or ids
    constraints = BundleConstraints(
        min_size=min_size,
        max_size=draw(st.integers(min_value=min_size, max_value=4)),
        budget=draw(st.one_of(st.none(), st.floats(min_value=0, max_value=300, allow_nan=False))),
        in_stock_only=draw(st.booleans()),
        allow_same_leaf=frozenset(draw(st.lists(st.sampled_from([*LEAVES[1:], "*"]), max_size=2))),
        anchors=tuple(anchors),
        exclude=frozenset(draw(st.lists(st.sampled_from(others), max_size=2, unique=True))),
    )
    pair = np.asarray(draw(st.lists(st.floats(min_value=-3, max_value=3), min_size=n * n, max_size=n * n))).reshape(n, n)
    candidates = draw(st.lists(st.integers(min_value=0, max_value=n - 1), max_size=2 * n))
    return table, constraints, pair, candidates


def pair_scorer(pair: np.ndarray):
    def score(sets: list[tuple[int, ...]]) -> np.ndarray:
        out = []
        for s in sets:
            rows = list(s)
            sub = pair[np.ix_(rows, rows)]
            out.append(float(sub.sum() - np.trace(sub)) / max(1, len(rows) * (len(rows) - 1)) + 0.1 * len(rows))
        return np.asarray(out)

    return score


def feasible_exists(table: ItemTable, c: BundleConstraints, candidates: list[int]) -> bool:
    anchors = [table.row_of[a] for a in c.anchors]
    others = sorted(set(candidates) - set(anchors))
    for k in range(0, c.max_size - len(anchors) + 1):
        for extra in itertools.combinations(others, k):
            if not check_bundle(anchors + list(extra), table, c):
                return True
    return False


@settings(max_examples=300, deadline=None)
@given(problems(), st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=3))
def test_composer_never_violates_a_constraint(problem, n: int, beam: int) -> None:
    table, constraints, pair, candidates = problem
    relevance = np.linspace(-1, 1, len(table))
    result = compose(table, candidates, constraints, pair_scorer(pair), relevance, 0.3, n=n, beam_width=beam)
    assert len(result.bundles) <= n
    for bundle in result.bundles:
        assert check_bundle(bundle.rows, table, constraints) == []
        assert set(bundle.rows) <= set(candidates) | {table.row_of[a] for a in constraints.anchors}
    assert len({frozenset(b.rows) for b in result.bundles}) == len(result.bundles)
    # Empty exactly when no bundle exists among the candidates, and then a reason says why.
    exists = feasible_exists(table, constraints, candidates)
    assert bool(result.bundles) == exists
    if not result.bundles:
        assert result.reason
    # Deterministic.
    again = compose(table, candidates, constraints, pair_scorer(pair), relevance, 0.3, n=n, beam_width=beam)
    assert [b.rows for b in again.bundles] == [b.rows for b in result.bundles]
    assert [b.objective for b in again.bundles] == [b.objective for b in result.bundles]


def small_table() -> ItemTable:
    return ItemTable(
        item_ids=["T1", "T2", "L1", "S1", "P1"],
        titles=["tent", "tent 2", "lantern", "sleeping bag", "pegs"],
        prices=np.array([120.0, 200.0, 20.0, 80.0, np.nan]),
        in_stock=np.array([True, True, False, True, True]),
        leaves=["C > Tents", "C > Tents", "C > Lanterns", "C > Bags", "C > Pegs"],
    )


def test_reasons_when_infeasible() -> None:
    table = small_table()
    score = pair_scorer(np.zeros((5, 5)))
    cases = {
        "out of stock": BundleConstraints(anchors=("L1",)),
        "also excluded": BundleConstraints(anchors=("T1",), exclude=frozenset({"T1"})),
        "share leaf category": BundleConstraints(anchors=("T1", "T2")),
        "over the budget": BundleConstraints(anchors=("T1",), budget=100),
        "no price": BundleConstraints(anchors=("P1",), budget=500),
        "minimum size": BundleConstraints(anchors=("T1",), min_size=4, max_size=4),
        "cheapest": BundleConstraints(anchors=("T1",), budget=210, min_size=3, in_stock_only=False),
    }
    for words, constraints in cases.items():
        result = compose(table, range(5), constraints, score)
        assert result.bundles == [] and result.reason and words in result.reason, (words, result.reason)


def test_leaf_may_repeat_when_allowed_and_budget_respected() -> None:
    table = small_table()
    score = pair_scorer(np.ones((5, 5)))
    c = BundleConstraints(min_size=2, max_size=3, allow_same_leaf=frozenset({"C > Tents"}), anchors=("T1",), budget=400)
    result = compose(table, range(5), c, score, n=5)
    rows = [set(b.rows) for b in result.bundles]
    assert {0, 1} in rows or any({0, 1} <= r for r in rows)  # two tents allowed now
    for b in result.bundles:
        assert check_bundle(b.rows, table, c) == []
        assert 4 not in b.rows  # pegs have no price: never in a budgeted bundle


def test_bad_constraints_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        BundleConstraints(min_size=3, max_size=2)
    with pytest.raises(ConfigError):
        BundleConstraints(budget=-1)
    with pytest.raises(ConfigError):
        compose(small_table(), [0], BundleConstraints(anchors=("nope",)), pair_scorer(np.zeros((5, 5))))


def test_larger_random_catalogs_hold_constraints() -> None:
    """Bigger pools than hypothesis draws (beam pruning matters): 40 seeded problems of 30 items."""
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(40):
        n = 30
        table = ItemTable(
            item_ids=[f"I{i}" for i in range(n)], titles=[f"item {i}" for i in range(n)],
            prices=np.where(rng.random(n) < 0.1, np.nan, rng.uniform(1, 80, n)),
            in_stock=rng.random(n) < 0.85, leaves=[LEAVES[j] for j in rng.integers(0, len(LEAVES), n)],
        )
        lo = int(rng.integers(1, 4))
        c = BundleConstraints(
            min_size=lo, max_size=int(rng.integers(lo, 5)), budget=None if rng.random() < 0.3 else float(rng.uniform(20, 200)),
            anchors=(f"I{rng.integers(n)}",) if rng.random() < 0.5 else (), exclude=frozenset({f"I{rng.integers(n)}"}),
        )
        pair = rng.normal(size=(n, n))
        candidates = rng.choice(n, size=20, replace=False).tolist()
        result = compose(table, candidates, c, pair_scorer(pair), n=3, beam_width=3)
        assert bool(result.bundles) == feasible_exists(table, c, candidates)
        for b in result.bundles:
            assert check_bundle(b.rows, table, c) == []
        found += bool(result.bundles)
    assert found >= 10


@settings(max_examples=200, deadline=None)
@given(problems(), st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=2))
def test_bundles_share_at_most_max_shared_non_anchor_items(problem, n: int, max_shared: int) -> None:
    """Issue 16: bundles a page shows side by side are not near-copies of each other."""
    table, constraints, pair, candidates = problem
    result = compose(table, candidates, constraints, pair_scorer(pair), n=n, max_shared=max_shared)
    anchors = {table.row_of[a] for a in constraints.anchors}
    others = [set(b.rows) - anchors for b in result.bundles]
    for a, b in itertools.combinations(others, 2):
        assert len(a & b) <= max_shared


def test_near_copies_give_way_to_fewer_bundles() -> None:
    """Five items that all go together: without the rule the best bundles are the big set and its
    near-copies; with the default (1 shared item) they share at most one item."""
    n = 5
    table = ItemTable(item_ids=[f"I{i}" for i in range(n)], titles=[f"item {i}" for i in range(n)],
                      prices=np.full(n, 10.0), in_stock=np.ones(n, bool), leaves=[""] * n)
    c = BundleConstraints(min_size=2, max_size=4, anchors=("I0",))
    score = pair_scorer(np.ones((n, n)))
    loose = compose(table, range(n), c, score, n=3, max_shared=None)
    assert max(len((set(a.rows) & set(b.rows)) - {0}) for a, b in itertools.combinations(loose.bundles, 2)) >= 2
    strict = compose(table, range(n), c, score, n=3, max_shared=1)
    assert strict.bundles
    assert all(len((set(a.rows) & set(b.rows)) - {0}) <= 1 for a, b in itertools.combinations(strict.bundles, 2))
