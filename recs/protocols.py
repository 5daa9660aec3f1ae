"""The model interfaces the serving path calls. Each has a torch and an ONNX implementation:

| Protocol      | torch                                        | ONNX (recs.serving.onnx_runtime) |
|---------------|----------------------------------------------|----------------------------------|
| TowerEncoders | recs.retrieval.encode.TorchTowers            | OnnxTowers                       |
| Ranker        | recs.ranking.ranker.LearnedRanker            | OnnxRanker                       |
| PairScorer    | recs.ranking.cross_encoder.CrossEncoderReranker | OnnxCrossEncoder              |
| SetScorer     | recs.bundling.scorer.SetScorer               | OnnxSetScorer                    |

The stages (Retriever, RankingPipeline, Bundler) hold these, never a concrete class, so one
loader (`recs.serving.load`) builds the same Engine from either runtime. numpy only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["ItemEncoder", "PairScorer", "Ranker", "SetScorer", "TowerEncoders", "UserEncoder", "WritableTowers"]


class ItemEncoder(Protocol):
    @property
    def dim(self) -> int: ...

    def encode_items(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, finite."""
        ...


class UserEncoder(Protocol):
    def encode_users(self, texts: list[str], history_means: np.ndarray) -> np.ndarray:
        """(len(texts), dim) float32 from history texts and recency-weighted history vectors."""
        ...


class TowerEncoders(ItemEncoder, UserEncoder, Protocol):
    """Both towers, and the tokenizer a cross-encoder shares with them."""

    @property
    def tokenizer(self) -> Any: ...


@runtime_checkable
class WritableTowers(Protocol):
    """Towers whose weights can be written into an artifact (torch; an ONNX export is read-only)."""

    def write(self, writer: Any) -> list[str]: ...


class Ranker(Protocol):
    feature_names: tuple[str, ...] | Sequence[str]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n,) float32 scores, higher is better, finite."""
        ...


class PairScorer(Protocol):
    def score(self, user_text: str, item_texts: list[str], deadline: float | None = None) -> np.ndarray | None:
        """(len(item_texts),) float32 scores, or None once time.monotonic() passes `deadline`."""
        ...


class SetScorer(Protocol):
    @property
    def n_items(self) -> int: ...

    @property
    def has_preference_head(self) -> bool: ...

    def user_vectors(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]: ...

    def score(self, sets: Sequence[Sequence[int]], users: np.ndarray | None = None,
              has_user: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def complete(self, rests: Sequence[Sequence[int]], candidates: np.ndarray | None = None,
                 user: np.ndarray | None = None, chunk: int = 16) -> np.ndarray: ...

    def rebased(self, item_vectors: np.ndarray, new_row_of_old: np.ndarray) -> SetScorer:
        """The same scorer over a changed catalog (new items: no co-occurrence)."""
        ...
