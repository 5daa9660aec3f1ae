"""The history term of the user tower: recency-weighted means of item vectors (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def history_weights(n: int, half_life: float) -> np.ndarray:
    """Weights for n history items in chronological order (most recent last), summing to 1."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    age = np.arange(n - 1, -1, -1, dtype=np.float32)
    weights = np.power(0.5, age / max(half_life, 1e-6))
    return (weights / weights.sum()).astype(np.float32)


def history_means(
    histories: Sequence[Sequence[int]], item_vectors: np.ndarray, max_items: int, half_life: float
) -> np.ndarray:
    """Recency-weighted mean of item vectors per history (rows of zeros for empty histories)."""
    out = np.zeros((len(histories), item_vectors.shape[1]), dtype=np.float32)
    for row, history in enumerate(histories):
        recent = list(history)[-max_items:]
        if recent:
            out[row] = history_weights(len(recent), half_life) @ item_vectors[recent]
    return out
