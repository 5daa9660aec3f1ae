"""The two-tower model: a BERT user tower and a BERT item tower (shared backbone by default).

User vector = normalise(head_u(mean_pool(BERT(user text))) + w * mean(history item vectors)).
The history term re-uses the item tower's own vectors of the items the user interacted with (recency
weighted); on real shops that mean was a stronger zero-shot signal than the joined-titles text, and
the learned weight `w` lets training decide how much of each to use.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from recs.encoders.pooling import l2_normalize, mean_pool
from recs.retrieval.config import TowerConfig


class TwoTowerModel(nn.Module):
    def __init__(self, backbone: nn.Module, config: TowerConfig) -> None:
        super().__init__()
        self.config = config
        self.item_backbone = backbone
        self.user_backbone = copy.deepcopy(backbone) if config.separate_backbones else backbone
        hidden = int(backbone.config.hidden_size)
        out = config.projection_dim or hidden
        self.item_head = nn.Linear(hidden, out)
        self.user_head = nn.Linear(hidden, out)
        if out == hidden:
            # Identity start: before fine-tuning the towers equal the backbone's own sentence vectors.
            for head in (self.item_head, self.user_head):
                nn.init.eye_(head.weight)
                nn.init.zeros_(head.bias)
        # softplus(raw) = history weight; raw chosen so the initial weight is history_weight_init.
        init = float(np.log(np.expm1(max(config.history_weight_init, 1e-3))))
        self.history_weight_raw = nn.Parameter(torch.tensor(init))

    @property
    def dim(self) -> int:
        return self.item_head.out_features

    def history_weight(self) -> torch.Tensor:
        return nn.functional.softplus(self.history_weight_raw)

    def encode_items(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.item_backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return l2_normalize(self.item_head(mean_pool(hidden, attention_mask)))

    def encode_users(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        history_mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.user_backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vector = self.user_head(mean_pool(hidden, attention_mask))
        vector = l2_normalize(vector)
        if self.config.user_input == "text+history" and history_mean is not None:
            vector = vector + self.history_weight() * history_mean
        return l2_normalize(vector)

    def forward(
        self,
        users: dict[str, torch.Tensor],
        items: dict[str, torch.Tensor],
        history_mean: torch.Tensor | None = None,
        hard_negatives: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One training step's encodings (user vectors, item vectors, hard-negative vectors):
        the call that DistributedDataParallel wraps, so that its gradient sync sees the step."""
        user_vecs = self.encode_users(**users, history_mean=history_mean)
        item_vecs = self.encode_items(**items)
        return user_vecs, item_vecs, None if hard_negatives is None else self.encode_items(**hard_negatives)
