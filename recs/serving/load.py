"""Any artifact folder -> the parts of an `Engine`, read once.

A trained folder (`recs train`, ...) is served with torch; an exported one (`recs export`) with
onnxruntime only (this module imports neither torch nor transformers for it). Both give the same
Retriever, RankingPipeline and Bundler, holding implementations of `recs.protocols`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recs.artifacts import Artifact, open_artifact
from recs.bundling.bundler import Bundler
from recs.errors import ArtifactError
from recs.ranking.config import CROSS_ENCODER_COMBINATION
from recs.ranking.pipeline import (
    RANKER_NAMES,
    RankingPipeline,
    RankOptions,
    read_rank_options,
)
from recs.retrieval.retriever import Retriever
from recs.serving.onnx_runtime import (
    OnnxCrossEncoder,
    OnnxRanker,
    OnnxTowers,
    RuntimeOptions,
    graph,
    is_onnx_export,
    load_onnx_bundler,
    onnx_spec,
)

__all__ = ["EngineParts", "read_engine"]


@dataclass
class EngineParts:
    retriever: Retriever
    pipeline: RankingPipeline
    options: RankOptions
    bundler: Bundler | None
    runtime: RuntimeOptions | None  # None: torch


def read_engine(path: str | Path | Artifact, runtime: RuntimeOptions | None = None) -> EngineParts:
    """Everything an Engine serves from the folder at `path`. `runtime` sets the ONNX sessions
    (precision, providers, threads); a torch folder ignores it."""
    artifact = path if isinstance(path, Artifact) else open_artifact(path)
    if is_onnx_export(artifact):
        return _read_onnx(artifact, runtime or RuntimeOptions())
    return _read_torch(artifact)


def _read_torch(artifact: Artifact) -> EngineParts:
    from recs.ranking.artifact import read_torch_ranking

    retriever = Retriever.from_artifact(artifact)
    bundler = Bundler.load(artifact, retriever) if artifact.has_component("set_scorer") else None
    return EngineParts(retriever, read_torch_ranking(artifact, retriever), read_rank_options(artifact), bundler, None)


def _read_onnx(artifact: Artifact, runtime: RuntimeOptions) -> EngineParts:
    spec = onnx_spec(artifact)
    towers = OnnxTowers.from_artifact(artifact, runtime)
    retriever = Retriever.from_artifact(artifact, towers)
    graphs = spec["graphs"]
    rankers = {name: OnnxRanker(graph(artifact, spec, name, runtime), graphs[name]["feature_names"])
               for name in RANKER_NAMES if name in graphs}
    cross = None
    if "cross_encoder" in graphs:
        if graphs["cross_encoder"].get("combination") != CROSS_ENCODER_COMBINATION:
            raise ArtifactError(f"{artifact.path}: the cross-encoder was exported for a second-stage ranker (an older "
                                "recs), not as a residual on the ranker: retrain the ranking stage and export again")
        cross = OnnxCrossEncoder(graph(artifact, spec, "cross_encoder", runtime), towers.tokenizer, int(graphs["cross_encoder"]["max_tokens"]))
    options = read_rank_options(artifact)
    if not artifact.has_component("rank_options") and spec.get("rank_options"):
        # Exports made before the serving defaults had their own component.
        options = RankOptions.parse_dict(spec["rank_options"], source=f"{artifact.path}/manifest.json")
    bundler = load_onnx_bundler(artifact, retriever, runtime) if "set_scorer" in graphs else None
    pipeline = RankingPipeline(retriever, cross_encoder=cross, **rankers)
    return EngineParts(retriever, pipeline, options, bundler, runtime)
