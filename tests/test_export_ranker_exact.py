"""The ONNX export of a LightGBM ranker routes every float32 row as LightGBM does.

LightGBM compares a feature with a float64 threshold; the ONNX TreeEnsemble holds float32 ones.
On features of a shop's magnitude (days ~1e4-1e5 with fractions, counts, prices like 19.99) the
thresholds are not float32 numbers, so a plain float32 rounding sends the rows at the threshold
the other way. The export's scores must equal LightGBM's (given the same float32 values as float64)
up to float32 rounding of the leaf sum, on random rows and on rows at, above and below every split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recs.export.ranker import boundary_rows, export_ranker, float32_threshold, ranker_parity
from recs.ranking.ranker import LearnedRanker, RankerConfig
from recs.serving.onnx_runtime import OnnxGraph, OnnxRanker, RuntimeOptions

NAMES = ("days_since_first", "days_to_next", "times_bought", "price", "share")
TOLERANCE = 1e-5  # float32 rounding of the sum of leaves


def _shop_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    days = rng.uniform(1e4, 1e5, n) + rng.random(n)
    to_next = rng.uniform(-400.0, 400.0, n) + rng.random(n) / 7.0
    counts = rng.integers(0, 40, n).astype(np.float64)
    price = np.round(rng.choice([19.99, 4.99, 129.95, 0.49, 1049.0], n) * rng.integers(1, 4, n) + rng.integers(0, 300, n) * 0.01, 2)
    share = rng.random(n) / 3.0
    return np.column_stack([days, to_next, counts, price, share]).astype(np.float32)


def _ranker(objective: str) -> tuple[LearnedRanker, np.ndarray]:
    rng = np.random.default_rng(7)
    x = _shop_rows(rng, 480)
    score = np.sin(x[:, 0] / 997.0) + (x[:, 3] > 39.99) - np.abs(x[:, 1]) / 300.0 + 0.05 * x[:, 2] + x[:, 4]
    y = (score + rng.normal(0, 0.3, len(x)) > np.median(score)).astype(np.int64)
    config = RankerConfig(objective=objective, n_estimators=60, min_data_in_leaf=3, learning_rate=0.1, valid_share=0.0)
    return LearnedRanker(NAMES, config).fit(x, y, np.full(len(x) // 12, 12)), x


def _onnx(ranker: LearnedRanker, path: Path) -> OnnxRanker:
    spec = export_ranker(ranker, path)
    graph = OnnxGraph(path, RuntimeOptions(precision="fp32", providers=["CPUExecutionProvider"]))
    return OnnxRanker(graph, spec["feature_names"])


def _split_thresholds(ranker: LearnedRanker) -> dict[int, set[float]]:
    """Every numerical split's threshold (float64, as LightGBM holds it), by feature."""
    out: dict[int, set[float]] = {}
    stack = [tree["tree_structure"] for tree in ranker.booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:
            continue
        assert node["decision_type"] == "<="
        out.setdefault(int(node["split_feature"]), set()).add(float(node["threshold"]))
        stack += [node["left_child"], node["right_child"]]
    return out


def _adversarial_rows(ranker: LearnedRanker, base: np.ndarray, per_value: int = 6) -> np.ndarray:
    """Rows whose split feature sits at float32(threshold) and one float32 step either side, for
    every split threshold, and at 0, +-1e-35 (LightGBM reads |x| <= 1e-35 as 0), their neighbours
    and NaN, each on `per_value` base rows."""
    rng = np.random.default_rng(1)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    tiny = np.float32(1e-35)
    near_zero = [np.float32(0.0), np.float32(-0.0), np.float32(np.nan)]
    near_zero += [v for k in (tiny, -tiny) for v in (k, np.nextafter(k, up), np.nextafter(k, down))]
    rows = []
    for feature, thresholds in sorted(_split_thresholds(ranker).items()):
        values = [v for t in sorted(thresholds) for t32 in [np.float32(t)] for v in (t32, np.nextafter(t32, up), np.nextafter(t32, down))]
        for value in values + near_zero:
            block = base[rng.integers(0, len(base), per_value)].copy()
            block[:, feature] = value
            rows.append(block)
    return np.concatenate(rows)


def _max_diff(ranker: LearnedRanker, onnx_ranker: OnnxRanker, x: np.ndarray) -> float:
    assert x.dtype == np.float32
    want = ranker.predict(x.astype(np.float64))  # LightGBM on the same float32 values
    got = onnx_ranker.predict(x)
    return float(np.abs(want.astype(np.float64) - got.astype(np.float64)).max())


F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(
    ("t", "want"),
    [
        (19.99, None),
        (0.1, None),  # float32(0.1) rounds up
        (5.5450000762939462, None),
        (30.5, 30.5),  # a float32 already
        (13321.817382812502, 13321.8173828125),
        (1e300, F32_MAX),  # LightGBM's "+inf"
        (-1e300, -np.inf),
        (1.0000000180025095e-35, float(np.float32(1e-35))),  # LightGBM's split at +-kZeroThreshold
        (-1.0000000180025095e-35, float(np.nextafter(np.float32(-1e-35), np.float32(-1)))),
        (0.0, float(np.float32(1e-35))),  # (0, 1e-35] is read as 0 by LightGBM: goes left with it
        (-3e-36, float(np.nextafter(np.float32(-1e-35), np.float32(-1)))),
    ],
)
def test_float32_threshold(t: float, want: float | None) -> None:
    got = float32_threshold(t)
    if want is None:  # the largest float32 not above t
        assert float(np.float32(got)) == got and got <= t < float(np.nextafter(np.float32(got), np.float32(np.inf)))
    else:
        assert got == want


@pytest.mark.parametrize("objective", ["lambdarank", "binary"])
def test_onnx_ranker_scores_equal_lightgbm_on_random_and_threshold_rows(objective: str, tmp_path: Path) -> None:
    ranker, x = _ranker(objective)
    onnx_ranker = _onnx(ranker, tmp_path / "ranker.onnx")
    random_rows = _shop_rows(np.random.default_rng(3), 3000)
    assert _max_diff(ranker, onnx_ranker, random_rows) <= TOLERANCE
    adversarial = _adversarial_rows(ranker, x)
    assert len(adversarial) > 1000
    assert _max_diff(ranker, onnx_ranker, adversarial) <= TOLERANCE


@pytest.mark.parametrize("objective", ["lambdarank", "binary"])
def test_boundary_rows_reach_every_split_and_match(objective: str, tmp_path: Path) -> None:
    ranker, x = _ranker(objective)
    onnx_ranker = _onnx(ranker, tmp_path / "ranker.onnx")
    rows = boundary_rows(ranker, x[:20])
    n_splits = sum(tree["num_leaves"] - 1 for tree in ranker.booster.dump_model()["tree_info"])
    assert rows.dtype == np.float32 and len(rows) == 3 * n_splits
    assert _max_diff(ranker, onnx_ranker, rows) <= TOLERANCE
    # Each split's three rows are on its path: the row at the threshold and the one below go
    # left, the one above goes right (LightGBM's own routing, read back as leaf indices).
    leaves = ranker.booster.predict(rows.astype(np.float64), pred_leaf=True)
    i = 0
    for t, tree in enumerate(ranker.booster.dump_model()["tree_info"]):
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            left, right = _leaf_ids(node["left_child"]), _leaf_ids(node["right_child"])
            at, above, below = leaves[i : i + 3, t]
            assert at in left and below in left and above in right
            i += 3
            stack += [node["right_child"], node["left_child"]]


def _leaf_ids(node: dict) -> set[int]:
    if "leaf_index" in node:
        return {int(node["leaf_index"])}
    return _leaf_ids(node["left_child"]) | _leaf_ids(node["right_child"])


def test_parity_check_includes_boundary_rows_and_catches_inexact_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recs.export.ranker as module

    ranker, x = _ranker("lambdarank")
    real = x[:50]
    exact = ranker_parity(ranker, _onnx(ranker, tmp_path / "exact.onnx"), real)
    assert exact["rows"] > len(real) and exact["boundary_rows"] > 0
    assert exact["max_abs_diff"] <= TOLERANCE and exact["ok"]
    # The same trees with plain (round-to-nearest) float32 thresholds: the check must notice.
    monkeypatch.setattr(module, "float32_threshold", lambda t: t)
    inexact = ranker_parity(ranker, _onnx(ranker, tmp_path / "inexact.onnx"), real)
    assert inexact["max_abs_diff"] > module.RANKER_MAX_DIFF and not inexact["ok"]

