"""The set scorer's prior: "similar items, often bought together", fitted once, then fixed.

Per set, the mean over its ordered pairs of f_ij = [cos(x_i, x_j), g_ij] (g: the co-occurrence
pair features of cooc.py) is the feature vector; the prior logit is w . mean_{i != j} f_ij + b.
`fit_prior` fits (w, b) by a logistic regression of real training sets (1) against their
corruptions (0: one of each kind in sets.CORRUPTIONS), balanced, before the net trains; the
weights become buffers of `SetScorerNet` that the optimizer never moves (the scale of the
logit is folded into w). Training sets get leave-self-out features ("own", as training uses),
corrupted sets only for their untouched members. Seeded; double precision LBFGS on a (N, 4)
matrix (features included, about 4 s on online_retail).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recs.bundling.scorer import DEFAULT_PRIOR_WEIGHT, N_PRIOR_FEATURES, SetScorer
from recs.bundling.sets import CORRUPTIONS, NegativeSampler, pad

PRIOR_SETS = 5000  # real training sets sampled for the fit (each with one corruption per kind)
FEATURE_NAMES: tuple[str, ...] = ("cos", "log1p_count", "cooc_cosine", "cooc_any")


def prior_features(x: torch.Tensor, pair: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 4): per set, the mean over ordered pairs of members of [x_i . x_j, g_ij] (item vectors
    are L2-normalised: the dot is the cosine); 0 for sets of one item."""
    fm = mask.float()
    eye = torch.eye(x.shape[1], device=x.device, dtype=torch.bool).unsqueeze(0)
    pm = (fm.unsqueeze(2) * fm.unsqueeze(1)).masked_fill(eye, 0.0)
    feats = torch.cat([torch.einsum("bid,bjd->bij", x, x).unsqueeze(-1), pair], dim=-1)
    n = fm.sum(1)
    return (feats * pm.unsqueeze(-1)).sum((1, 2)) / torch.clamp(n * (n - 1), min=1.0).unsqueeze(-1)


def prior_data(
    scorer: SetScorer,
    sampler: NegativeSampler,
    sets: Sequence[np.ndarray],
    rng: np.random.Generator,
    max_sets: int = PRIOR_SETS,
    max_set_size: int = 16,
    use_cooc: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 4), labels (N,)): sampled real training sets (subsampled to `max_set_size`
    items) and one corruption of each kind of each."""
    pick = rng.choice(len(sets), max_sets, replace=False) if len(sets) > max_sets else np.arange(len(sets))
    real = [rng.choice(r, max_set_size, replace=False) if len(r) > max_set_size else np.asarray(r) for r in (sets[i] for i in pick)]
    rows: list[np.ndarray] = list(real)
    own: list[np.ndarray] = [np.ones(len(r), bool) for r in real]
    for kind in CORRUPTIONS:
        for r in real:
            c = sampler.corrupt(r, kind, rng)
            if c is not None:
                rows.append(c)
                own.append(np.isin(c, r))  # the swapped-in item was never in this training set
    labels = np.concatenate([np.ones(len(real)), np.zeros(len(rows) - len(real))]).astype(np.float64)
    out = []
    for start in range(0, len(rows), 512):
        padded = pad(rows[start : start + 512])
        own_padded = pad([o.astype(np.int64) for o in own[start : start + 512]], padded.shape[1]) > 0
        x, _, pair, mask = scorer.set_features(padded, own_padded)
        out.append(prior_features(x, pair if use_cooc else torch.zeros_like(pair), mask).double().numpy())
    feats = np.concatenate(out) if out else np.zeros((0, N_PRIOR_FEATURES))
    return feats, labels


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-3, max_iter: int = 200) -> tuple[np.ndarray, float]:
    """(w, b) of a class-balanced, L2-regularised logistic regression (on standardised features,
    returned in raw units). Constant columns get weight 0. Deterministic."""
    x = torch.from_numpy(np.asarray(features, np.float64))
    y = torch.from_numpy(np.asarray(labels, np.float64))
    n_pos, n_neg = float(y.sum()), float((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the prior fit needs real sets and corrupted sets")
    mu = x.mean(0)
    sd = x.std(0)
    sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))
    z = (x - mu) / sd
    sample_weight = torch.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (sample_weight * torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w_raw = (w.detach() / sd).numpy()
    b_raw = float(b.detach() - (w.detach() * mu / sd).sum())
    return w_raw, b_raw


def fit_prior(
    scorer: SetScorer,
    sampler: NegativeSampler,
    sets: Sequence[np.ndarray],
    seed: int,
    max_set_size: int = 16,
    use_cooc: bool = True,
) -> dict[str, object]:
    """Fit the prior on training `sets` (catalog rows; `scorer` holds their co-occurrence
    statistics) and write it into `scorer.net`'s buffers. Returns a report: weights, bias, the
    number of sets and whether the fit was used (a non-finite or impossible fit keeps the
    hand-set prior)."""
    rng = np.random.default_rng([seed, 2])
    feats, labels = prior_data(scorer, sampler, sets, rng, max_set_size=max_set_size, use_cooc=use_cooc)
    report: dict[str, object] = {"sets": int(labels.sum()), "corrupted": int(len(labels) - labels.sum())}
    try:
        w, b = fit_logistic(feats, labels)
    except ValueError as err:
        w, b = np.zeros(0), float("nan")
        report["error"] = str(err)
    fitted = bool(len(w) == N_PRIOR_FEATURES and np.isfinite(w).all() and np.isfinite(b))
    if not fitted:
        w, b = np.asarray(DEFAULT_PRIOR_WEIGHT, np.float64), 0.0
    scorer.net.set_prior(w, b)
    return {**report, "fitted": fitted, "weights": dict(zip(FEATURE_NAMES, map(float, w), strict=True)), "bias": float(b)}
