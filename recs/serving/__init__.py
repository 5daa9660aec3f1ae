"""Serving: the Engine facade; the HTTP service is `recs.serving.app` (imported on demand: fastapi)."""

from recs.serving.engine import Engine, RecommendedItem

__all__ = ["Engine", "RecommendedItem"]
