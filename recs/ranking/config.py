"""Ranking configs (torch-free): the rankers, the cross-encoder, the ranking stage's training, and
the serving options (`RankOptions`) a request starts from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recs.configmodel import StrictModel

# Saved with a cross-encoder (torch and ONNX): how its score is served. One trained for the
# second-stage ranker of older artifacts is refused rather than served as a residual. Here, not in
# pipeline.py, so that the cross-encoder's trainer needs neither the retriever nor faiss.
CROSS_ENCODER_COMBINATION = "ranker_logit+cross_encoder"


class RankerConfig(StrictModel):
    # "lambdarank" orders a user's candidates (the main ranker); "binary" scores each candidate's
    # chance alone (the discover ranker, whose queries hold few positives). Scores are raw either way.
    objective: Literal["lambdarank", "binary"] = "lambdarank"
    n_candidates: int = Field(default=200, ge=1)
    # Small, slow trees: the label (next basket) is noisy and a few thousand queries is typical.
    num_leaves: int = Field(default=15, ge=2)
    learning_rate: float = Field(default=0.02, gt=0)
    n_estimators: int = Field(default=600, ge=1)
    min_data_in_leaf: int = Field(default=50, ge=1)  # at most 5% of the training rows (small shops)
    feature_fraction: float = Field(default=0.9, gt=0, le=1)
    early_stopping_rounds: int = Field(default=40, ge=1)
    valid_share: float = Field(default=0.2, ge=0, lt=1)
    max_users: int = Field(default=20000, ge=1)
    # Features the ranker may not use (held at 0 while it trains, so no tree splits on them and
    # serving needs no change): how `benchmarks/ablation.py` takes a part out of the engine.
    ignored_features: tuple[str, ...] = ()
    seed: int = 0


class CrossEncoderConfig(StrictModel):
    # Pair length in training and serving alike (the served inputs are cut where the trained ones
    # were). 48: the user's few most recent items, the candidate's title and relation words
    # (longest-first truncation cuts the older end of the history first). On the demo shop 48
    # tokens reranked as well as 64 (test NDCG@10 at R = 20 0.4644 vs 0.4636) at ~3/4 of the cost
    # per pair: R = 20 in one int8 batch, p50 / p95 54 / 66 ms on 2 CPU cores (encode_speed.py).
    max_tokens: int = Field(default=48, ge=16)
    epochs: int = Field(default=2, ge=1)
    queries_per_step: int = Field(default=4, ge=1)
    lr: float = Field(default=3e-5, gt=0)
    head_lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # At most the first `layers` transformer layers of the towers' backbone (None: all of them; a
    # backbone with fewer keeps all of its own); the rest are dropped. Per-pair cost is about
    # linear in the depth: 4 of MiniLM-L6's 6 layers score R = 20 pairs of 48 tokens in one int8
    # batch at p95 39-45 ms on 2 CPU cores (6 layers: 56-71 ms; encode_speed.py, two runs), and
    # on the demo shop reranked within noise of the 6-layer one. `train_layers` counts within
    # the kept ones.
    layers: int | None = Field(default=4, ge=1)
    train_layers: int | None = Field(default=2, ge=0)
    # Epochs without a validation gain before training stops: 2, so that one noisy epoch does not
    # end it (on the demo shop the 4-layer one's first epoch gained in one run and lost in another).
    patience: int = Field(default=2, ge=1)
    max_queries: int = Field(default=1500, ge=1)
    valid_share: float = Field(default=0.2, gt=0, lt=1)
    max_minutes: float | None = Field(default=None, gt=0)
    seed: int = 0


class RankOptions(StrictModel):
    rerank: bool = True
    rerank_top: int = Field(default=20, ge=0)
    time_budget_ms: float | None = Field(default=250.0, ge=0)
    diversity: float = Field(default=0.0, ge=0, le=1)  # MMR lambda = 1 - diversity
    category_cap: int | None = Field(default=None, ge=1)
    novelty: bool = False  # only items new to the user ("discover" shelf)


class RankingConfig(StrictModel):
    ranker: RankerConfig = RankerConfig()
    discover: RankerConfig = RankerConfig(objective="binary")  # the --novelty shelf's ranker
    cross_encoder: CrossEncoderConfig = CrossEncoderConfig()
    options: RankOptions = RankOptions()
    train_ranker: bool = True
    train_discover: bool = True
    train_cross_encoder: bool = True
    # The rankers also learn from each user's `earlier_baskets` baskets before the held-out one
    # (each with the history before it): a shop with few users has few validation baskets, and the
    # next-basket label is noisy. The cross-encoder and the choice of R use the held-out one only.
    earlier_baskets: int = Field(default=1, ge=0)
    # The cross-encoder learns on what it serves: the first stage's top `ce_train_top` (None: the
    # largest `rerank_choices` up to 20) plus `ce_extra_candidates` random others from below it.
    ce_train_top: int | None = Field(default=None, ge=2)
    ce_extra_candidates: int = Field(default=2, ge=0)
    # Folds of the first-stage ranker whose out-of-fold logits the cross-encoder's residual is
    # trained on (an in-sample logit is over-confident on the very queries the CE learns from).
    oof_folds: int = Field(default=2, ge=2)
    decision_share: float = Field(default=0.2, ge=0, lt=1)  # of the queries: group C
    decision_max_queries: int = Field(default=300, ge=0)
    # Candidate default R values; the largest is bounded by latency (CPU: ~15 ms per pair).
    rerank_choices: tuple[int, ...] = (10, 20)
    min_rerank_gain: float = Field(default=0.0, ge=0)

    def resolved_ce_train_top(self) -> int:
        if self.ce_train_top is not None:
            return self.ce_train_top
        return max((r for r in self.rerank_choices if 1 < r <= 20), default=20)
