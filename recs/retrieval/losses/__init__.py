"""Retrieval losses, one per file."""

from recs.retrieval.losses.bce import pointwise_bce_loss
from recs.retrieval.losses.infonce import in_batch_softmax_loss

__all__ = ["in_batch_softmax_loss", "pointwise_bce_loss"]
