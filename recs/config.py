"""One configuration: `RecsConfig`, read from one TOML file by every command (`--config`), saved
into the artifact, printed by `recs config show --model M`.

    [data]        DataConfig       loading, validation policy, cleaning
    [retrieval]   RetrievalConfig  towers, their training, candidate sources ([retrieval.candidates]), index
    [ranking]     RankingConfig    rankers, cross-encoder, how the ranking stage is trained
    [bundling]    BundlerConfig    set scorer, its training, the composer
    [serving]     ServingConfig    request defaults (RankOptions), the ONNX runtime, the HTTP service ([serving.http])

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
    "HttpConfig",
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


class HttpConfig(StrictModel):
    """`recs serve`: where it listens and what one request may ask for (bigger is refused, not cut)."""

    host: str = "127.0.0.1"  # localhost unless told: admin routes must not face a network by accident
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_k: int = Field(default=200, ge=1)
    max_history: int = Field(default=500, ge=1)  # item ids in a request's history / exclude / items
    max_text_chars: int = Field(default=2000, ge=1)
    max_body_bytes: int = Field(default=65536, ge=1024)
    admin_token_env: str = "RECS_ADMIN_TOKEN"  # the variable holding the bearer token; unset: admin refused
    warmup: bool = True  # one request before /ready says yes (lazy state is built off the request path)
    # The event store: "auto" = SQLite `<model>.events.sqlite` beside the model folder, "off" =
    # none (POST /events refused), else a SQLite file path or a postgresql:// DSN.
    events: str = "auto"
    max_events: int = Field(default=1000, ge=1)  # events in one POST /events
    watch: bool = False  # reload when the model folder gets a new version (checked every watch_interval_s)
    watch_interval_s: float = Field(default=2.0, gt=0)


class ServingConfig(StrictModel):
    options: RankOptions = RankOptions()  # what a request starts from (train-ranker may set rerank_top)
    precision: Literal["fp32", "int8"] | None = None  # ONNX graphs; None: RECS_ONNX_PRECISION or fp32
    threads: int | None = Field(default=None, ge=0)  # onnxruntime intra-op threads; None: its choice
    http: HttpConfig = HttpConfig()


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
