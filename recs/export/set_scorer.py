"""The set scorer (recs/bundling) -> two ONNX graphs, and its parity with torch.

`set_scorer.onnx` is `SetScorerNet.forward` (whole padded sets -> set logits, preference logits);
`set_completion.onnx` is `SetScorerNet.complete` (rests x candidates -> set logits of rest +
candidate). Axes batch, members and candidates are dynamic. "No user" is exported as a zero user
vector with `has_user` false, which the net computes exactly as `user=None`. Both graphs are small
MLPs over item vectors: they are not quantised.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from recs.export.parity import ParityError

MAX_DIFF = 1e-3
_SET = {0: "batch", 1: "members"}

__all__ = ["SetCompletionGraph", "SetScoreGraph", "export_set_scorer"]


class SetScoreGraph(nn.Module):
    input_names = ("x", "pop", "pair", "mask", "user", "has_user")
    output_names = ("set_logits", "preference_logits")
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {"x": _SET, "pop": _SET, "pair": {0: "batch", 1: "members", 2: "members"}, "mask": _SET,
                    "user": {0: "batch"}, "has_user": {0: "batch"}, "set_logits": {0: "batch"}, "preference_logits": {0: "batch"}}

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, pop, pair, mask, user, has_user):  # type: ignore[no-untyped-def]
        return self.net(x, pop, pair, mask, user, has_user)


class SetCompletionGraph(nn.Module):
    input_names = ("x_rest", "pop_rest", "pair_rest", "mask_rest", "x_cand", "pop_cand", "pair_cross", "user", "has_user")
    output_names = ("completion_logits",)
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {
        "x_rest": _SET, "pop_rest": _SET, "pair_rest": {0: "batch", 1: "members", 2: "members"}, "mask_rest": _SET,
        "x_cand": {0: "cand_batch", 1: "candidates"}, "pop_cand": {0: "cand_batch", 1: "candidates"},
        "pair_cross": {0: "batch", 1: "candidates"}, "user": {0: "batch"}, "has_user": {0: "batch"},
        "completion_logits": {0: "batch", 1: "candidates"},
    }

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_rest, pop_rest, pair_rest, mask_rest, x_cand, pop_cand, pair_cross, user, has_user):  # type: ignore[no-untyped-def]
        return self.net.complete(x_rest, pop_rest, pair_rest, mask_rest, x_cand, pop_cand, pair_cross, user, has_user)


def _tensors(feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}


def export_set_scorer(source: Any, retriever: Any, root: Path, opset: int, check: bool) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Graphs + the scorer's data files (not its torch weights) into `root`.

    Returns (graph specs by name, files written relative to `root`, parity reports by graph name)."""
    from recs.bundling.bundler import FOLDER, Bundler
    from recs.bundling.item_model import booster_name
    from recs.export.ranker import checked_ranker_parity, export_ranker
    from recs.export.towers import export_module
    from recs.serving.onnx_runtime import OnnxGraph, OnnxRanker, OnnxSetScorer, RuntimeOptions

    torch_bundler = Bundler.load(source, retriever)
    torch_scorer, item_model = torch_bundler.scorer, torch_bundler.item_model
    # The runtime's scorer builds the exact feeds the graphs get; the torch net gets the same.
    feeds = OnnxSetScorer(None, None, torch_scorer.item_vectors, torch_scorer.cooc)  # type: ignore[arg-type]
    n = feeds.n_items
    sets = [np.arange(min(3, n)), np.arange(min(3, n), min(5, n))]
    users, has = feeds.user_vectors([[0, 1], []])
    from recs.bundling.sets import pad

    example_set = {**feeds.set_features(pad(sets)), "user": users, "has_user": has}
    example_completion = feeds.completion_inputs(sets, np.arange(min(7, n)), users[0])
    specs: dict[str, Any] = {}
    files: list[str] = []
    for name, module, example in (("set_scorer", SetScoreGraph(torch_scorer.net), example_set),
                                  ("set_completion", SetCompletionGraph(torch_scorer.net), example_completion)):
        rel = f"onnx/{name}.onnx"
        specs[name] = {"fp32": rel, **export_module(module, _tensors(example), root / rel, opset)}
        files.append(rel)
    # The item model's trees become ONNX graphs, as the ranker's do: serving needs no LightGBM.
    boosters = item_model.boosters if item_model is not None else {}
    for mode, booster in sorted(boosters.items()):
        name = booster_name(mode)
        rel = f"onnx/{name}.onnx"
        specs[name] = {"fp32": rel, **export_ranker(booster, root / rel)}
        files.append(rel)
    trees = {booster_name(mode) for mode in boosters}  # their LightGBM files stay behind, as the weights do
    for rel in source.component("set_scorer").files:
        if rel != f"{FOLDER}/weights.safetensors" and Path(rel).stem not in trees:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.path / rel, root / rel)
            files.append(rel)
    parity: dict[str, Any] = {}
    if check:
        options = RuntimeOptions(precision="fp32", providers=["CPUExecutionProvider"])
        onnx_scorer = OnnxSetScorer(OnnxGraph(root / specs["set_scorer"]["fp32"], options), OnnxGraph(root / specs["set_completion"]["fp32"], options),
                                    torch_scorer.item_vectors, torch_scorer.cooc)
        parity["set_scorer"] = set_scorer_parity(torch_scorer, onnx_scorer)
        rng = np.random.default_rng(0)
        for mode, booster in sorted(boosters.items()):
            name = booster_name(mode)
            graph = OnnxRanker(OnnxGraph(root / specs[name]["fp32"], options, name=name), specs[name]["feature_names"])
            parity[name] = checked_ranker_parity(name, booster, graph, rng.normal(size=(64, len(booster.feature_names))))
    return specs, files, parity


def set_scorer_parity(torch_scorer: Any, onnx_scorer: Any, seed: int = 0) -> dict[str, Any]:
    """Max |logit difference| over random sets (batch 1 and 16, 2-6 members, with and without a
    user) and completions against the whole catalog; raises ParityError above MAX_DIFF."""
    rng = np.random.default_rng(seed)
    n = torch_scorer.n_items
    diffs: dict[str, float] = {}
    for label, batch in (("b1", 1), ("b16", 16)):
        sets = [rng.choice(n, size=int(rng.integers(2, min(6, n) + 1)), replace=False) for _ in range(batch)]
        users, has = torch_scorer.user_vectors([rng.choice(n, size=3).tolist() for _ in range(batch)])
        for with_user in (False, True):
            args = (users, has) if with_user else (None, None)
            want = torch_scorer.score(sets, *args)
            got = onnx_scorer.score(sets, *args)
            diffs[f"score_{label}_{'user' if with_user else 'no_user'}"] = float(max(np.abs(w - g).max() for w, g in zip(want, got, strict=True)))
        rests = [s[:-1] for s in sets[:3]]
        for with_user in (False, True):
            user = users[0] if with_user else None
            want, got = torch_scorer.complete(rests, user=user), onnx_scorer.complete(rests, user=user)
            finite = np.isfinite(want)
            if not np.array_equal(finite, np.isfinite(got)):
                raise ParityError("set_completion: candidates masked differently from torch")
            diffs[f"complete_{label}_{'user' if with_user else 'no_user'}"] = float(np.abs(want[finite] - got[finite]).max())
    worst = max(diffs.values())
    if worst >= MAX_DIFF:
        raise ParityError(f"set scorer: ONNX logits differ from torch by up to {worst:.2e}")
    return {"max_abs_diff": worst, "by_setting": diffs, "bound": MAX_DIFF, "ok": True}
