"""recs: an e-commerce recommendation engine.

Public API (heavy modules load on first use, so `import recs` stays light):
    recs.Engine          load a trained artifact and recommend
    recs.load_dataset    read + validate + clean a shop folder
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that spin while waiting make torch and onnxruntime crawl on a shared or small
# machine (a batch-1 MiniLM call went from ~20 ms to 0.8 s here). Set before torch loads; an
# explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
