"""Parity of exported graphs with torch, and of the exported tokenizer with the HF tokenizer.

Each graph is run on the same token batches as its torch module: batch 1 and batch 64, short
(16 tokens) and long (128 tokens) sequences. Towers: cosine per row (fp32 >= 0.999, int8 >= 0.98);
cross-encoder: absolute score difference (fp32 < 1e-3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from recs.errors import RecsError

log = logging.getLogger(__name__)

TOWER_MIN_COSINE = {"fp32": 0.999, "int8": 0.98}
CROSS_MAX_DIFF = {"fp32": 1e-3}
SETTINGS = (("b1_short", 1, 16), ("b1_long", 1, 128), ("b64_short", 64, 16), ("b64_long", 64, 128))

__all__ = ["SETTINGS", "ParityError", "graph_parity", "parity_texts", "tokenizer_parity"]


class ParityError(RecsError):
    """An exported graph does not reproduce its torch module."""

    exit_code = 5


def parity_texts(texts: Sequence[str], n: int = 64, long: bool = False) -> list[str]:
    """`n` texts cycled from `texts`; `long` ones repeat themselves well past 128 tokens."""
    base = [t for t in texts if t] or ["an item"]
    out = [base[i % len(base)] for i in range(n)]
    return [" ; ".join([t] * 6) for t in out] if long else out


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def graph_parity(
    name: str,
    reference: Callable[[dict[str, np.ndarray]], np.ndarray],
    graphs: dict[str, Any],
    batches: Callable[[int, int], list[dict[str, np.ndarray]]],
    kind: str,
) -> dict[str, Any]:
    """Compare `reference` (torch) with each precision's ONNX graph over SETTINGS.

    `batches(batch_size, max_length)` gives the token batches of one setting; `kind` is
    "vectors" (cosine, higher is better) or "scores" (absolute difference, lower is better).
    Raises ParityError when fp32 misses its bound; a weak int8 graph is reported and logged."""
    out: dict[str, Any] = {}
    for precision, graph in graphs.items():
        per: dict[str, float] = {}
        for label, batch_size, length in SETTINGS:
            values = []
            for batch in batches(batch_size, length):
                ref = reference(batch)
                got = graph.run(batch)
                if kind == "vectors":
                    values.append(float(_cosine(ref, got).min()))
                else:
                    values.append(float(np.abs(ref.reshape(-1) - got.reshape(-1)).max()))
            per[label] = min(values) if kind == "vectors" else max(values)
        if kind == "vectors":
            worst = min(per.values())
            bound = TOWER_MIN_COSINE.get(precision)
            ok = bound is None or worst >= bound
            summary = {"min_cosine": worst, "by_setting": per, "bound": bound, "ok": ok}
            problem = f"{name} ({precision}): min cosine with torch {worst:.5f} < {bound}"
        else:
            worst = max(per.values())
            bound = CROSS_MAX_DIFF.get(precision)
            ok = bound is None or worst < bound
            summary = {"max_abs_diff": worst, "by_setting": per, "bound": bound, "ok": ok}
            problem = f"{name} ({precision}): max score difference with torch {worst:.2e} >= {bound}"
        out[precision] = summary
        if not ok:
            if precision == "fp32":
                raise ParityError(problem)
            log.warning("%s", problem)
    return out


def tokenizer_parity(hf_tokenizer: Any, onnx_tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None = None) -> bool:
    """True when the exported tokenizer gives the HF tokenizer's input ids, mask and type ids
    (singles and pairs, short and long); raises ParityError otherwise."""
    for length in (16, 128):
        for batch in (list(texts[:1]), list(texts)):
            second = None if pairs is None else list(pairs[: len(batch)])
            ref = hf_tokenizer(batch, second, truncation=True if second is None else "longest_first", max_length=length, padding=True)
            got = onnx_tokenizer(batch, length, pairs=second)
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                if key in ref and not np.array_equal(np.asarray(ref[key]), got[key]):
                    raise ParityError(f"exported tokenizer.json differs from the model's tokenizer on {key} (max_length {length})")
    return True
