"""Serving: the Engine facade (and, later, the HTTP service)."""

from recs.serving.engine import Engine, RecommendedItem

__all__ = ["Engine", "RecommendedItem"]
