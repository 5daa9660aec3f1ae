"""The LightGBM ranker (and second stage) -> an ONNX TreeEnsemble graph through onnxmltools.

Input `features` (batch, n_features) float32, output `scores` (batch, 1) float32: the booster's raw
scores, as `LearnedRanker.predict` returns them. onnxruntime's tree kernels compare in float32 while
LightGBM compares in float64, so a feature value within float32 rounding of a split threshold can fall
on the other side; `ranker_parity` measures that on real candidate features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAME = "features"
OUTPUT_NAME = "scores"
# onnxmltools' LightGBM converter supports opsets up to 15 (ai.onnx.ml 1..3 follow from it).
RANKER_OPSET = 15

__all__ = ["export_ranker", "ranker_parity"]


def export_ranker(ranker: Any, path: Path) -> dict[str, Any]:
    """Write `ranker`'s booster as ONNX at `path`; returns its graph spec for the manifest."""
    import onnx
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    n = len(ranker.feature_names)
    model = onnxmltools.convert_lightgbm(
        raw_score_booster(ranker.booster), initial_types=[(INPUT_NAME, FloatTensorType([None, n]))],
        target_opset=RANKER_OPSET, zipmap=False,
    )
    _rename_output(model, OUTPUT_NAME)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME], "feature_names": list(ranker.feature_names)}


def raw_score_booster(booster: Any) -> Any:
    """The same trees labelled as a regression, so that the converter emits their raw sum (what
    `LearnedRanker.predict` returns) instead of a classifier's label and probabilities."""
    import re

    import lightgbm as lgb

    text = booster.model_to_string()
    if "objective=binary" not in text:
        return booster
    text = re.sub(r"objective=binary[^\n]*", "objective=regression", text).replace("[objective: binary]", "[objective: regression]")
    return lgb.Booster(model_str=text)


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


def ranker_parity(ranker: Any, onnx_ranker: Any, features: np.ndarray) -> dict[str, float]:
    """Max absolute score difference and the share of rows whose difference is below 1e-4."""
    if len(features) == 0:
        return {"rows": 0, "max_abs_diff": 0.0, "share_within_1e-4": 1.0}
    ref = ranker.predict(features).astype(np.float64)
    got = onnx_ranker.predict(features).astype(np.float64)
    diff = np.abs(ref - got)
    return {"rows": len(features), "max_abs_diff": float(diff.max()), "share_within_1e-4": float((diff < 1e-4).mean())}
