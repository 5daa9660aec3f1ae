"""In-batch sampled softmax (InfoNCE) with logQ correction, accidental-hit masking, hard negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_MASKED = -1e4  # finite, so an all-masked row can never turn into NaN


def in_batch_softmax_loss(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    item_ids: torch.Tensor,
    temperature: float = 0.05,
    item_log_q: torch.Tensor | None = None,
    also_bought: torch.Tensor | None = None,
    hard_negative_vecs: torch.Tensor | None = None,
    hard_negative_ids: torch.Tensor | None = None,
    row_offset: int = 0,
) -> torch.Tensor:
    """Row i's positive is item i; the other in-batch items (and optional hard negatives) are negatives.

    - `item_log_q` (B,): log sampling probability of each in-batch item. Popular items appear as
      negatives more often than uniform sampling would; subtracting log q undoes that bias
      (Yi et al., 2019), so the model does not learn to push popular items down.
    - Accidental hits: column j is masked for row i when item j is the same item as row i's positive,
      or when `also_bought[i, j]` says user i also bought item j (it is no negative for them).
    - `hard_negative_vecs` (H, d) are appended as extra columns shared by every row; a hard negative
      equal to a row's positive is masked.
    - Data-parallel training: `user_vecs` (b, d) are this rank's rows, `item_vecs` (B, d) the
      items of every rank's rows (`item_ids`, `item_log_q` likewise global; `also_bought` (b, B)),
      and row i's positive is column `row_offset + i`. The loss is the mean over the local rows,
      so DDP's average over ranks is the global batch's mean loss.
    """
    rows = len(user_vecs)
    logits = user_vecs @ item_vecs.T / temperature
    if item_log_q is not None:
        logits = logits - item_log_q.unsqueeze(0)
    targets = torch.arange(row_offset, row_offset + rows, device=logits.device)
    row_ids = item_ids[row_offset : row_offset + rows]
    same_item = row_ids.unsqueeze(1) == item_ids.unsqueeze(0)
    eye = torch.zeros((rows, len(item_ids)), dtype=torch.bool, device=logits.device)
    eye[torch.arange(rows, device=logits.device), targets] = True
    accidental = same_item & ~eye
    if also_bought is not None:
        accidental = accidental | (also_bought & ~eye)
    logits = logits.masked_fill(accidental, _MASKED)
    if hard_negative_vecs is not None and len(hard_negative_vecs):
        hard = user_vecs @ hard_negative_vecs.T / temperature
        if hard_negative_ids is not None:
            hard = hard.masked_fill(row_ids.unsqueeze(1) == hard_negative_ids.unsqueeze(0), _MASKED)
        logits = torch.cat([logits, hard], dim=1)
    return F.cross_entropy(logits, targets)
