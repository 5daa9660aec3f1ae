"""Export: ONNX graphs for torch-free serving, and item vectors for search backends.

    from recs.export import export_artifact, export_search_index
    export_artifact("build/demo/model", "build/demo/onnx", int8=True)     # `recs export`
    export_search_index("build/demo/onnx", "parquet", out="items.parquet")  # `recs export-vectors`

Submodules: towers (torch -> ONNX), ranker (LightGBM -> ONNX), set_scorer (the bundling net ->
ONNX), quantize (onnxruntime optimiser and int8), parity (checks against torch), artifact (the
exported folder), backends (parquet, npy, pgvector, OpenSearch/Elasticsearch). The runtime is
`recs.serving.onnx_runtime`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["export_artifact", "export_search_index"]

if TYPE_CHECKING:
    from recs.export.artifact import export_artifact
    from recs.export.backends import export_search_index


def __getattr__(name: str) -> Any:
    # Lazy: `recs.export.backends` needs no torch, the ONNX exporter does.
    if name == "export_artifact":
        from recs.export.artifact import export_artifact

        return export_artifact
    if name == "export_search_index":
        from recs.export.backends import export_search_index

        return export_search_index
    raise AttributeError(f"module 'recs.export' has no attribute {name!r}")
