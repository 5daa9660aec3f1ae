"""One configuration: `RecsConfig`, read from one TOML file by every command (`--config`), saved
into the artifact, printed by `recs config show --model M`.

    [data]        DataConfig       loading, validation policy, cleaning
    [retrieval]   RetrievalConfig  towers, their training, candidate sources ([retrieval.candidates]), index
    [ranking]     RankingConfig    rankers, cross-encoder, how the ranking stage is trained
    [bundling]    BundlerConfig    set scorer, its training, the composer
    [serving]     ServingConfig    request defaults (RankOptions) and the ONNX runtime

Each section is owned by its stage (its class lives there); this module only gathers them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field

from recs.bundling.config import BundlerConfig
from recs.configmodel import OnBadRows, StrictModel, UnknownUserPolicy
from recs.data.config import CleaningConfig, DataConfig
from recs.errors import ConfigError
from recs.ranking.config import RankingConfig, RankOptions
from recs.retrieval.config import RetrievalConfig

__all__ = [
    "BundlerConfig",
    "CleaningConfig",
    "DataConfig",
    "OnBadRows",
    "RankOptions",
    "RankingConfig",
    "RecsConfig",
    "RetrievalConfig",
    "ServingConfig",
    "StrictModel",
    "UnknownUserPolicy",
    "load_config",
]


class ServingConfig(StrictModel):
    options: RankOptions = RankOptions()  # what a request starts from (train-ranker may set rerank_top)
    precision: Literal["fp32", "int8"] | None = None  # ONNX graphs; None: RECS_ONNX_PRECISION or fp32
    threads: int | None = Field(default=None, ge=0)  # onnxruntime intra-op threads; None: its choice


class RecsConfig(StrictModel):
    data: DataConfig = DataConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    ranking: RankingConfig = RankingConfig()
    bundling: BundlerConfig = BundlerConfig()
    serving: ServingConfig = ServingConfig()


def load_config(path: str | Path | None) -> RecsConfig:
    """The file's sections over the defaults; the defaults when `path` is None."""
    if path is None:
        return RecsConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read TOML: {err}") from None
    return RecsConfig.parse_dict(data, source=str(path))
