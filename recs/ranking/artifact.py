"""The ranking stage in an artifact: the LightGBM rankers, the cross-encoder and the serving
defaults (`rank_options.json`), saved together and read back with torch (the ONNX export's are
read by `recs.serving.load`)."""

from __future__ import annotations

from pathlib import Path

from recs.artifacts import Artifact, ArtifactWriter
from recs.errors import ArtifactError
from recs.ranking.pipeline import (
    LEGACY_RANKER_NAMES,
    RANKER_NAMES,
    RankingPipeline,
    RankOptions,
    write_rank_options,
)
from recs.retrieval.retriever import Retriever

CROSS_ENCODER = "cross_encoder"


def save_ranking(path: str | Path, pipeline: RankingPipeline, options: RankOptions) -> list[str]:
    """Replace the ranking stage of an existing artifact with `pipeline`'s, atomically. The serving
    defaults are always written, with or without trained models. Returns the ranking components
    the artifact had that `pipeline` has no replacement for: they are removed (a cross-encoder is
    a residual on its ranker's scores, so an old one would not fit a new ranker), and the caller
    says so."""
    from recs.ranking.cross_encoder import CrossEncoderReranker
    from recs.ranking.ranker import LearnedRanker

    path = Path(path)
    with ArtifactWriter(path, base=path) as writer:
        had = [name for name in (*RANKER_NAMES, *LEGACY_RANKER_NAMES, CROSS_ENCODER) if name in writer.components]
        for name in had:
            writer.remove_component(name)
        root = writer.path
        for name, model in pipeline.rankers().items():
            if not isinstance(model, LearnedRanker):
                raise ArtifactError("an exported ONNX folder is read-only: retrain the ranker on the torch artifact")
            writer.add_component(name, "ranker", files=model.save(root, name))
        if pipeline.cross_encoder is not None:
            if not isinstance(pipeline.cross_encoder, CrossEncoderReranker):
                raise ArtifactError("an exported ONNX folder is read-only: retrain the cross-encoder on the torch artifact")
            writer.add_component(CROSS_ENCODER, "cross_encoder", files=pipeline.cross_encoder.save(root))
        write_rank_options(writer, options)
        removed = [name for name in had if name not in writer.components]
    return removed


def read_torch_ranking(artifact: Artifact, retriever: Retriever) -> RankingPipeline:
    """The rankers and the cross-encoder saved by `save_ranking` (those present). An older
    artifact's second-stage ranker is not read; its cross-encoder (not a residual) is refused."""
    from recs.ranking.cross_encoder import CrossEncoderReranker
    from recs.ranking.ranker import LearnedRanker

    root = artifact.path
    rankers = {name: LearnedRanker.load(root, name) for name in RANKER_NAMES if artifact.has_component(name)}
    cross = None
    if artifact.has_component(CROSS_ENCODER):
        cross = CrossEncoderReranker.load(root, retriever.torch_towers().tokenizer)
    return RankingPipeline(retriever, cross_encoder=cross, **rankers)
