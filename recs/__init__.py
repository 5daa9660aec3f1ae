"""recs: an e-commerce recommendation engine.

Public API (heavy modules load on first use, so `import recs` stays light):
    recs.Engine          load a trained artifact and recommend
    recs.load_dataset    read + validate + clean a shop folder
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Engine", "__version__", "load_dataset"]

if TYPE_CHECKING:
    from recs.data.load import load_dataset
    from recs.serving.engine import Engine


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from recs.serving.engine import Engine

        return Engine
    if name == "load_dataset":
        from recs.data.load import load_dataset

        return load_dataset
    raise AttributeError(f"module 'recs' has no attribute {name!r}")
