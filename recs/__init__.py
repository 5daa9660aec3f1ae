"""recs: an e-commerce recommendation engine.

Public API (heavy modules load on first use, so `import recs` stays light):
    recs.Engine          fit (Engine.fit) or load (Engine.load) a model and recommend
    recs.RecsConfig      the one configuration (sections data, retrieval, ranking, bundling, serving)
    recs.RuntimeOptions  how ONNX sessions run (precision, providers, threads): Engine.load(runtime=...)
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
__all__ = ["Engine", "RecsConfig", "RuntimeOptions", "__version__", "load_dataset"]

if TYPE_CHECKING:
    from recs.config import RecsConfig
    from recs.data.load import load_dataset
    from recs.serving.engine import Engine
    from recs.serving.onnx_runtime import RuntimeOptions


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from recs.serving.engine import Engine

        return Engine
    if name == "RecsConfig":
        from recs.config import RecsConfig

        return RecsConfig
    if name == "RuntimeOptions":
        from recs.serving.onnx_runtime import RuntimeOptions

        return RuntimeOptions
    if name == "load_dataset":
        from recs.data.load import load_dataset

        return load_dataset
    raise AttributeError(f"module 'recs' has no attribute {name!r}")
