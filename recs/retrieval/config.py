"""Retrieval configs (torch-free, so a serving process can read them without torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recs.configmodel import StrictModel, UnknownUserPolicy
from recs.data.text import DEFAULT_ITEM_TEMPLATE
from recs.retrieval.candidates import CandidateConfig


class TowerConfig(StrictModel):
    model: str = "default"
    separate_backbones: bool = False
    projection_dim: int | None = None  # None: the backbone's hidden size, heads start as identity
    max_item_tokens: int = 32
    max_user_tokens: int = 64
    user_input: Literal["text", "text+history"] = "text+history"
    history_weight_init: float = 1.0
    history_max_items: int = 20
    history_half_life: float = 5.0  # in history positions: the 5th most recent item counts half


class TrainConfig(StrictModel):
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-4, gt=0)
    head_lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    grad_clip: float = Field(default=1.0, gt=0)
    temperature: float = Field(default=0.05, gt=0)
    logq_correction: bool = True
    mask_also_bought: bool = True
    # "new_to_user": learn only from baskets' items the user had not bought before. Re-buys are the
    # history source's job (candidates.py); the towers are there to find what is new to the user.
    positives: Literal["all", "new_to_user"] = "new_to_user"
    hard_negatives: int = Field(default=0, ge=0)
    # Only the top `train_layers` transformer layers are fine-tuned (None: all): on 2 CPU cores
    # this halves a step's time; on a GPU set it to None.
    train_layers: int | None = Field(default=2, ge=0)
    max_pairs_per_epoch: int | None = Field(default=8000, ge=1)
    patience: int = Field(default=2, ge=1)
    valid_users: int = Field(default=1000, ge=1)
    valid_ks: tuple[int, ...] = (10, 50)
    seed: int = 0
    max_minutes: float | None = Field(default=None, gt=0)
    lora: bool = False
    lora_r: int = Field(default=8, ge=1)


class RetrievalConfig(StrictModel):
    towers: TowerConfig = TowerConfig()
    train: TrainConfig = TrainConfig()
    candidates: CandidateConfig = CandidateConfig()
    index_kind: Literal["auto", "flat", "hnsw", "ivfpq"] = "auto"
    unknown_user: UnknownUserPolicy = "fallback"
    max_history_events: int = 50
    user_text_max_chars: int = 512
    item_template: str = DEFAULT_ITEM_TEMPLATE
