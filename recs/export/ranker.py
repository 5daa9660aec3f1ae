"""The LightGBM rankers (main and discover) -> an ONNX TreeEnsemble graph through onnxmltools.

Input `features` (batch, n_features) float32, output `scores` (batch, 1) float32: the booster's raw
scores, as `LearnedRanker.predict` returns them.

Exactness: LightGBM sends a row left when `x <= t` with `t` a float64 threshold; the TreeEnsemble
holds float32 thresholds (BRANCH_LEQ). Rounding `t` to the nearest float32 can round it up, and the
float32 values between `t` and that rounded threshold then go left in ONNX and right in LightGBM (on
real shops: days ~1e4-1e5, prices, whose thresholds are midpoints of float32 values). So before the
conversion each numerical threshold becomes the largest float32 not above it (`float32_floor`): for
every float32 `x`, `x <= t` exactly when `x <= float32_floor(t)`. LightGBM also reads an input with
|x| <= 1e-35 (its kZeroThreshold) as 0, and splits next to 0 at about +-1e-35, so
`float32_threshold` moves those thresholds to where LightGBM's zeroed inputs put the boundary. Every
float32 row (the only rows the graph takes) then falls in the same leaves as in LightGBM. The sign
of a threshold is kept, so the converter's handling of missing values (default_left, missing type)
is unchanged; categorical splits are left alone. `export_ranker` checks the graph's thresholds
against the booster's, and `ranker_parity` scores real rows plus rows at, above and below every
split (`boundary_rows`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from recs.export.parity import ParityError

INPUT_NAME = "features"
OUTPUT_NAME = "scores"
# onnxmltools' LightGBM converter supports opsets up to 15 (ai.onnx.ml 1..3 follow from it).
RANKER_OPSET = 15
# Largest score difference the parity check accepts: routing is exact, so what is left is float32
# rounding of the sum of leaves (about 1e-6); one row sent down another branch moves a score by a
# leaf value (1e-3 .. 1e-1 at the usual learning rates).
RANKER_MAX_DIFF = 1e-4

__all__ = ["RANKER_MAX_DIFF", "boundary_rows", "checked_ranker_parity", "export_ranker", "float32_floor", "float32_threshold",
           "ranker_parity"]


def export_ranker(ranker: Any, path: Path) -> dict[str, Any]:
    """Write `ranker`'s booster as ONNX at `path`; returns its graph spec for the manifest."""
    import onnx
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    n = len(ranker.feature_names)
    model = onnxmltools.convert_lightgbm(
        onnx_booster(ranker), initial_types=[(INPUT_NAME, FloatTensorType([None, n]))],
        target_opset=RANKER_OPSET, zipmap=False,
    )
    _rename_output(model, OUTPUT_NAME)
    onnx.checker.check_model(model)
    _check_thresholds(model, _dump(ranker))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME], "feature_names": list(ranker.feature_names)}


def float32_floor(t: float) -> float:
    """The largest float32 not above `t` (-inf below the float32 range, which the graph's float32
    cast of LightGBM's -1e300 also gives)."""
    with np.errstate(over="ignore"):
        t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)


# LightGBM's kZeroThreshold (1e-35f): a dense input with |x| <= it is read as 0.0 before any split.
_ZERO = np.float32(1e-35)


def float32_threshold(t: float) -> float:
    """The float32 `T` with: float32 `x` goes left at LightGBM's split `x <= t` exactly when x <= T.
    `float32_floor(t)`, except that the inputs LightGBM reads as 0 (|x| <= 1e-35) go where 0 goes."""
    floor = float32_floor(t)
    if t >= 0:  # 0 goes left: so does everything up to 1e-35
        return max(floor, float(_ZERO))
    return min(floor, float(np.nextafter(-_ZERO, np.float32(-np.inf))))  # 0 goes right: so does -1e-35


def onnx_booster(ranker: Any) -> Any:
    """The booster the converter gets: the trees `LearnedRanker.predict` uses, with every numerical
    threshold replaced by its `float32_threshold`, labelled as a regression when the objective is
    binary so that the converter emits their raw sum instead of a classifier's label and
    probabilities. It scores every float32 row as the ranker does."""
    import lightgbm as lgb

    text = ranker.booster.model_to_string(num_iteration=ranker.best_iteration)
    text = re.sub(r"objective=binary[^\n]*", "objective=regression", text).replace("[objective: binary]", "[objective: regression]")
    text = _TREE.sub(_float32_thresholds, text)
    sizes = " ".join(str(len(tree.encode())) for tree in _TREE.findall(text))
    text = re.sub(r"^tree_sizes=.*$", lambda _: f"tree_sizes={sizes}", text, count=1, flags=re.M)
    return lgb.Booster(model_str=text)


# One tree of a LightGBM model text, as its `tree_sizes` header counts it.
_TREE = re.compile(r"^Tree=\d+\n.*?(?=^Tree=|^end of trees)", re.S | re.M)
_CATEGORICAL = 1  # LightGBM's decision_type bit for a categorical split


def _float32_thresholds(match: Any) -> str:
    tree = match.group(0)
    kinds = re.search(r"^decision_type=(.*)$", tree, re.M)
    if kinds is None:  # a single leaf
        return tree
    numerical = [not int(k) & _CATEGORICAL for k in kinds.group(1).split()]

    def exact(line: Any) -> str:
        values = line.group(1).split()
        return "threshold=" + " ".join(repr(float32_threshold(float(v))) if num else v for v, num in zip(values, numerical, strict=True))

    return re.sub(r"^threshold=(.*)$", exact, tree, count=1, flags=re.M)


def _dump(ranker: Any) -> list[dict[str, Any]]:
    return ranker.booster.dump_model(num_iteration=ranker.best_iteration)["tree_info"]


def _splits(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """A tree's split nodes, depth first, left before right."""
    out, stack = [], [tree["tree_structure"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            out.append(node)
            stack += [node["right_child"], node["left_child"]]
    return out


def _check_thresholds(model: Any, trees: list[dict[str, Any]]) -> None:
    """Every `<=` split of the graph holds `float32_threshold` of the booster's threshold."""
    from onnx.helper import get_attribute_value

    node = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    attrs = {a.name: get_attribute_value(a) for a in node.attribute}
    values = attrs.get("nodes_values")
    if values is None:
        from onnx.numpy_helper import to_array

        values = to_array(attrs["nodes_values_as_tensor"])
    got: dict[int, list[tuple[int, float]]] = {}
    for tree, mode, feature, value in zip(attrs["nodes_treeids"], attrs["nodes_modes"], attrs["nodes_featureids"], values, strict=True):
        if mode in (b"BRANCH_LEQ", "BRANCH_LEQ"):
            got.setdefault(int(tree), []).append((int(feature), float(np.float32(value))))
    for i, tree in enumerate(trees):
        want = sorted((int(s["split_feature"]), float(np.float32(float32_threshold(float(s["threshold"])))))
                      for s in _splits(tree) if s["decision_type"] == "<=")
        if sorted(got.get(i, [])) != want:
            raise ParityError(f"ranker: the ONNX graph's thresholds of tree {i} are not float32_threshold of LightGBM's")


def _rename_output(model: Any, name: str) -> None:
    old = model.graph.output[0].name
    if old == name:
        return
    for node in model.graph.node:
        for i, out in enumerate(node.output):
            if out == old:
                node.output[i] = name
        for i, inp in enumerate(node.input):
            if inp == old:
                node.input[i] = name
    model.graph.output[0].name = name


def boundary_rows(ranker: Any, base: np.ndarray) -> np.ndarray:
    """Three float32 rows per split of the ranker's trees (depth first, left before right): on the
    path to the split, with its feature at `float32_threshold(threshold)` (goes left), one float32 step
    above (goes right) and one below. Rows start from `base`'s rows in turn; only the features the
    path constrains are moved, to the nearest value the path allows."""
    base = np.asarray(base, dtype=np.float32)
    if len(base) == 0:
        base = np.zeros((1, len(ranker.feature_names)), dtype=np.float32)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    rows: list[np.ndarray] = []
    for tree in _dump(ranker):
        # (node, {feature: (lo, hi)}): the path's rows have lo < x <= hi
        stack: list[tuple[dict[str, Any], dict[int, tuple[np.float32, np.float32]]]] = [(tree["tree_structure"], {})]
        while stack:
            node, bounds = stack.pop()
            if "split_feature" not in node:
                continue
            row = base[len(rows) // 3 % len(base)].copy()
            for f, (lo, hi) in bounds.items():
                if not lo < row[f] <= hi:
                    row[f] = hi if np.isfinite(hi) else np.nextafter(lo, up)
            f = int(node["split_feature"])
            if node["decision_type"] == "<=":
                at = np.float32(float32_threshold(float(node["threshold"])))
                lo, hi = bounds.get(f, (down, up))
                right = {**bounds, f: (max(lo, at), hi)}
                left = {**bounds, f: (lo, min(hi, at))}
            else:  # categorical: its rows only check the path
                at, left, right = row[f], bounds, bounds
            for value in (at, np.nextafter(at, up), np.nextafter(at, down)):
                row[f] = value
                rows.append(row.copy())
            stack += [(node["right_child"], right), (node["left_child"], left)]
    return np.stack(rows) if rows else np.zeros((0, base.shape[1]), dtype=np.float32)


def ranker_parity(ranker: Any, onnx_ranker: Any, features: np.ndarray) -> dict[str, Any]:
    """LightGBM's and the graph's scores on `features` (real candidate rows) and on `boundary_rows`
    built from them: max absolute difference, the share of rows below 1e-4, and `ok` (the max within
    RANKER_MAX_DIFF). Both score the same float32 values."""
    x = np.asarray(features, dtype=np.float32).reshape(-1, len(ranker.feature_names))
    edges = boundary_rows(ranker, x[:256])
    rows = np.concatenate([x, edges])
    if len(rows) == 0:
        return {"rows": 0, "boundary_rows": 0, "max_abs_diff": 0.0, "share_within_1e-4": 1.0, "bound": RANKER_MAX_DIFF, "ok": True}
    ref = ranker.predict(rows).astype(np.float64)
    got = onnx_ranker.predict(rows).astype(np.float64)
    diff = np.abs(ref - got)
    worst = float(diff.max())
    return {"rows": len(rows), "boundary_rows": len(edges), "max_abs_diff": worst, "share_within_1e-4": float((diff < 1e-4).mean()),
            "bound": RANKER_MAX_DIFF, "ok": worst <= RANKER_MAX_DIFF}


def checked_ranker_parity(name: str, ranker: Any, onnx_ranker: Any, features: np.ndarray) -> dict[str, Any]:
    """`ranker_parity`, raising ParityError (the export refuses the folder) when it is not ok."""
    result = ranker_parity(ranker, onnx_ranker, features)
    if not result["ok"]:
        raise ParityError(f"{name}: ONNX scores differ from LightGBM's by up to {result['max_abs_diff']:.2e} "
                          f"over {result['rows']} rows ({result['boundary_rows']} at split thresholds)")
    return result
