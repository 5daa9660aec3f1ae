"""Bundling configs (torch-free, so serving can read them without torch)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from recs.configmodel import StrictModel
from recs.ranking.config import RankerConfig


class SetScorerConfig(StrictModel):
    """Shape of the set scorer (see recs/bundling/scorer.py)."""

    hidden: int = Field(default=128, ge=4)
    pair_rank: int = Field(default=64, ge=1)
    # Inputs beside the item vectors: co-occurrence of each pair and each item's frequency in the
    # training sets. Off = a content-only scorer (item vectors, user vector).
    use_cooc: bool = True
    use_popularity: bool = True
    dropout: float = Field(default=0.2, ge=0, lt=1)  # on the item vectors, while training


class SetTrainConfig(StrictModel):
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=5e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    # Validation completion often plateaus for a few epochs while the score scale settles.
    patience: int = Field(default=12, ge=1)
    valid_fraction: float = Field(default=0.1, gt=0, lt=1)
    # Larger sets are subsampled to this many items per training step (a 500-item invoice says
    # little more about what goes together than 16 of its items, and costs 1000x the pairs).
    max_set_size: int = Field(default=16, ge=2)
    # The hidden item of each training set is ranked against the whole catalog (a full softmax,
    # cheap with this scorer), or against this many random items when the catalog is larger.
    softmax_items: int = Field(default=20000, ge=2)
    # Corrupted sets per real set and kind (see recs/bundling/sets.py), for the pointwise
    # real-vs-corrupted loss that makes scores of different sets comparable.
    negatives: dict[str, int] = Field(default_factory=lambda: {"substitute": 4, "random": 4, "popular": 4})
    user_dropout: float = Field(default=0.5, ge=0, le=1)
    # Early stopping and the kept checkpoint follow this validation metric: "ndcg@10" (completing
    # held-out sets against the whole catalog, what bundles need) or "auc" (real vs corrupted),
    # then the residual gate, under the rule that no corruption AUC ends below the prior's.
    select_on: Literal["ndcg@10", "auc"] = "ndcg@10"
    preference_weight: float = Field(default=1.0, ge=0)
    max_sets: int | None = Field(default=None, ge=2)  # seeded sample of the training sets
    max_minutes: float | None = Field(default=None, gt=0)
    seed: int = 0
    # User vector = recency-weighted mean of the item vectors of the user's earlier purchases.
    history_max_items: int = Field(default=20, ge=1)
    history_half_life: float = Field(default=5.0, gt=0)


class ComposeConfig(StrictModel):
    beam_width: int = Field(default=10, ge=1)
    n_user_candidates: int = Field(default=50, ge=0)  # retriever's top N for the user
    n_neighbours: int = Field(default=30, ge=0)  # co-purchase neighbours per anchor
    n_complements: int = Field(default=30, ge=0)  # the set scorer's best completions per anchor
    # Without anchors (a user's bundle, with an item model): the items most co-purchased with the
    # user's recent purchases join the candidates (the item model ranks them).
    n_history_cooc: int = Field(default=50, ge=0)
    # Objective = set logit + relevance_weight * mean z-scored user relevance of the items.
    relevance_weight: float = Field(default=0.5, ge=0)
    # What the user relevance is: "candidates" = the retriever's merged candidates from every
    # source (own purchases first, then two-tower, co-purchase, TIFU-KNN, ALS), by rank;
    # "two_tower" = the two-tower score alone.
    user_relevance: Literal["candidates", "two_tower"] = "candidates"
    # With an item model (item_model.py): objective = set logit + item_weight * the mean
    # log-odds of the added items joining the basket, so the item model leads and the set
    # logit says how the added items go together. The default where the fit chose none
    # (`[bundling.item_model] weight_grid`).
    item_weight: float = Field(default=10.0, ge=0)
    n_item_candidates: int = Field(default=60, ge=1)  # the item model's best candidates the search sees
    # Two returned bundles share at most this Jaccard overlap of their non-anchor items (relaxed
    # when too few bundles remain) ...
    max_overlap: float = Field(default=0.5, ge=0, le=1)
    # ... and never more than this many non-anchor items (not relaxed: fewer bundles rather than
    # near-copies a page would show side by side).
    max_shared_items: int = Field(default=1, ge=0)


class ItemModelConfig(StrictModel):
    """The bundle item model (recs/bundling/item_model.py), fitted on held-out baskets (each sampled user's last of 3+ items)."""

    enabled: bool = True
    max_baskets: int = Field(default=2000, ge=10)  # held-out baskets: a seeded sample of users, each one's last of 3+ items
    # "boosted": per mode, LightGBM trees (the ranker's trainer, `booster`) over the features,
    # their raw score the log-odds; "logistic": the logistic regression alone (always fitted: its
    # weights are the report's readable summary). On online_retail's 500 test baskets the trees'
    # user bundles held more of the basket than the regression's (precision 0.308 vs 0.302, each
    # at the weight its held-out baskets chose; around an anchor they tie): a tree can weigh one
    # feature by the value of another, which one weight per feature cannot.
    model: Literal["boosted", "logistic"] = "boosted"
    booster: RankerConfig = Field(default_factory=lambda: RankerConfig(objective="binary"))
    l2: float = Field(default=1.0, ge=0)  # the logistic regression's
    # The item model's weight in the compose objective, per mode (with an anchor / for the user
    # alone): the one of `weight_grid` whose bundles hold most of the held-out baskets' items, on
    # at most `select_baskets` of them per mode, when its gain over `[bundling.compose]
    # item_weight` exceeds one standard error (0 baskets: no selection, that default).
    weight_grid: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(default_factory=lambda: [1.0, 3.0, 10.0, 30.0], min_length=1)
    select_baskets: int = Field(default=200, ge=0)

    @field_validator("booster")
    @classmethod
    def _binary(cls, booster: RankerConfig) -> RankerConfig:
        if booster.objective != "binary":
            raise ValueError("booster.objective must be 'binary': the compose objective reads its raw score as log-odds")
        # The ranker's candidate and user caps have no meaning here (max_baskets caps the examples);
        # their defaults pass, so that a saved config's dump reads back.
        inert = [name for name in ("max_users", "n_candidates") if getattr(booster, name) != RankerConfig.model_fields[name].default]
        if inert:
            raise ValueError(f"booster.{', booster.'.join(inert)}: not used by the bundle item model (its examples are capped by max_baskets)")
        return booster


class BundlerConfig(StrictModel):
    scorer: SetScorerConfig = SetScorerConfig()
    train: SetTrainConfig = SetTrainConfig()
    compose: ComposeConfig = ComposeConfig()
    item_model: ItemModelConfig = ItemModelConfig()
