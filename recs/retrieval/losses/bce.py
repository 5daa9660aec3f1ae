"""Pointwise binary cross-entropy for explicit labels (ratings, clicked vs shown)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pointwise_bce_loss(
    user_vecs: torch.Tensor, item_vecs: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """`labels` in [0, 1] per (user i, item i) pair, e.g. rating / max rating."""
    logits = (user_vecs * item_vecs).sum(dim=-1) / temperature
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
