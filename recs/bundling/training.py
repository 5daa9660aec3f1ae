"""Training the set scorer on real sets against corrupted ones.

Each step takes a batch of real sets (subsampled to `max_set_size`), hides one item of each, and
scores `rest + c` for every item c of the catalog (cheap: see scorer.py). The loss is
- listwise: softmax cross-entropy of the hidden item against the whole catalog (completion,
  exactly what bundles need; sampled negatives alone leave the order at the top untrained), plus
- pointwise: balanced BCE of the real set (1) vs corrupted sets (0: one item swapped for a
  same-category substitute, a random item, a popular item), so that scores compare across sets
  (the composer ranks sets with different contents), plus
- preference (when sets have users with earlier purchases): BCE of (user, their set) vs (another
  user, the same set).

Before training, the scorer's prior (scorer.py: "similar items, often bought together") is
fitted on the training sets and their corruptions (prior.py) and fixed; training moves only the
learned residual, which starts at zero, so epoch 0 (untrained) IS the prior.

Validation every epoch: ROC AUC of real validation sets against one corruption of each kind
(substitute, random, popular), and of the preference head on (user, set) vs (other user, set).
Early stopping on validation completion NDCG@10 (or the mean corruption AUC, `select_on`).
Selection never ends below the prior on validation: the candidate weights are the best epoch by
`select_on` and the best epoch whose corruption AUCs of every kind are all at least the prior's;
for each, the residual gate is tried at GATES, and the final scorer is the (epoch, gate) with the
best `select_on` among those whose AUC of every kind is at least the prior's (gate 0, the prior
itself, always qualifies; the preference head keeps its trained weights whatever the gate). The
kept weights are written to `work_dir/best.safetensors`, metrics appended to
`work_dir/metrics.jsonl`. Seeded. CPU: the model reads frozen item vectors, so an epoch over tens
of thousands of sets takes seconds.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recs.bundling.config import SetScorerConfig, SetTrainConfig
from recs.bundling.cooc import CoocStats
from recs.bundling.prior import fit_prior
from recs.bundling.scorer import NEG, SetScorer, SetScorerNet
from recs.bundling.sets import (
    CORRUPTIONS,
    NegativeSampler,
    TrainingSets,
    nearest_items,
    pad,
    require_sets,
    split_sets,
)
from recs.io import atomic_write_file
from recs.progress import progress_bar
from recs.retrieval.checkpoint import load_model_state, model_state

VALID_COMPLETIONS = 256  # validation sets completed against the whole catalog each epoch
GATES: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)  # residual gates tried after training (0: the prior)


@dataclass
class SetTrainReport:
    sets: dict[str, int] = field(default_factory=dict)  # by source
    train_sets: int = 0
    valid_sets: int = 0
    valid_is_train: bool = False  # too few sets to hold any out
    preference_pairs: int = 0  # training sets with a user and earlier purchases
    epochs_run: int = 0
    best_epoch: int = 0  # the epoch whose weights are kept
    best_metric: float = -1.0  # validation `selected_on` of the final scorer (at its gate)
    selected_on: str = "ndcg@10"
    prior: dict = field(default_factory=dict)  # the fitted prior (prior.fit_prior's report)
    prior_metrics: dict = field(default_factory=dict)  # validation metrics of the prior (epoch 0)
    residual_gate: float = 1.0
    valid_metrics: dict = field(default_factory=dict)  # validation metrics of the final scorer
    gates: list[dict] = field(default_factory=list)  # every (epoch, gate) tried, and whether it qualified
    steps: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score(pos) > score(neg)) with ties counting half (Mann-Whitney); 0.5 when undefined."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return 0.5
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def _subsample(rows: np.ndarray, max_size: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= max_size:
        return rows
    return rng.choice(rows, size=max_size, replace=False)


@dataclass
class _Validation:
    real: list[np.ndarray]
    corrupted: dict[str, list[np.ndarray]]
    pref_sets: list[np.ndarray]
    pref_users: np.ndarray  # (P, d)
    pref_other: np.ndarray  # (P, d)
    rests: list[np.ndarray] = field(default_factory=list)  # completion: each set less one item
    hidden: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _validation_data(
    valid: TrainingSets, sampler: NegativeSampler, scorer: SetScorer, config: SetTrainConfig
) -> _Validation:
    rng = np.random.default_rng([config.seed, 1])
    real = [_subsample(r, config.max_set_size, rng) for r in valid.rows]
    corrupted: dict[str, list[np.ndarray]] = {}
    for kind in CORRUPTIONS:
        corrupted[kind] = [c for c in (sampler.corrupt(r, kind, rng) for r in real) if c is not None]
    users, has = scorer.user_vectors(valid.histories)
    idx = np.flatnonzero(has)
    pref_sets, pref_users, pref_other = [], np.zeros((0, users.shape[1]), np.float32), np.zeros((0, users.shape[1]), np.float32)
    if len(idx) >= 2:
        other = np.roll(idx, 1 + int(rng.integers(len(idx) - 1)))
        keep = [j for j, (a, b) in enumerate(zip(idx, other, strict=True)) if valid.users[a] != valid.users[b]]
        pref_sets = [real[idx[j]] for j in keep]
        pref_users, pref_other = users[idx[keep]], users[other[keep]]
    rests, hidden = [], []
    for rows in real[:VALID_COMPLETIONS]:
        p = int(rng.integers(len(rows)))
        rests.append(np.delete(rows, p))
        hidden.append(rows[p])
    return _Validation(real, corrupted, pref_sets, pref_users, pref_other, rests, np.asarray(hidden, np.int64))


def _validate(scorer: SetScorer, data: _Validation, own: bool) -> dict[str, float]:
    def set_scores(sets: list[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(sets), 512):
            padded = pad(sets[start : start + 512])
            x, pop, pair, mask = scorer.set_features(padded, own)
            out.append(scorer.net(x, pop, pair, mask)[0].numpy())
        return np.concatenate(out) if out else np.zeros(0)

    metrics: dict[str, float] = {}
    with torch.no_grad():
        real = set_scores(data.real)
        for kind, sets in data.corrupted.items():
            # Corrupted sets are not training sets: only their untouched members are "own".
            metrics[f"auc_{kind}"] = roc_auc(real, set_scores(sets))
        metrics["auc"] = float(np.mean([metrics[f"auc_{k}"] for k in data.corrupted]))
        if data.rests:
            # Completion over the whole catalog: rank of the hidden item among all items.
            scores = scorer.complete(data.rests)
            truth = scores[np.arange(len(data.hidden)), data.hidden]
            ranks = (scores > truth[:, None]).sum(axis=1)
            metrics["recall@10"] = float((ranks < 10).mean())
            metrics["ndcg@10"] = float(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
        if data.pref_sets:
            padded = pad(data.pref_sets)
            x, pop, pair, mask = scorer.set_features(padded, own)
            pos = scorer.net(x, pop, pair, mask, torch.from_numpy(data.pref_users))[1].numpy()
            neg = scorer.net(x, pop, pair, mask, torch.from_numpy(data.pref_other))[1].numpy()
            metrics["auc_preference"] = roc_auc(pos, neg)
    return metrics


def fit_set_scorer(
    item_vectors: np.ndarray,
    leaves: np.ndarray,
    sets: TrainingSets,
    scorer_config: SetScorerConfig | None = None,
    config: SetTrainConfig | None = None,
    work_dir: Path | None = None,
    show_progress: bool = False,
) -> SetScorer:
    """Train a set scorer on `sets` (catalog rows into `item_vectors`); `leaves` = leaf category
    id per row (-1: none, see sets.leaf_ids). Returns the best-validation scorer, whose
    co-occurrence statistics cover every set (training and validation)."""
    scorer_config = scorer_config or SetScorerConfig()
    config = config or SetTrainConfig()
    require_sets(sets)
    began = time.monotonic()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
    n_items, dim = item_vectors.shape
    all_sets = sets
    if config.max_sets is not None and len(sets) > config.max_sets:
        sets = sets.subset(sorted(rng.choice(len(sets), config.max_sets, replace=False).tolist()))
    train, valid = split_sets(sets, config.valid_fraction, config.seed)
    valid_is_train = valid is train

    cooc_train = CoocStats.from_sets(train.rows, n_items)
    member_rows = np.unique(np.concatenate([r for r in all_sets.rows]))
    near = nearest_items(item_vectors, member_rows)
    sampler = NegativeSampler(n_items, leaves, near, cooc_train)
    net = SetScorerNet(dim, scorer_config)
    scorer = SetScorer(net, item_vectors, cooc_train, config.history_max_items, config.history_half_life)
    prior = fit_prior(scorer, sampler, train.rows, config.seed, config.max_set_size, scorer_config.use_cooc)
    users, has_user = scorer.user_vectors(train.histories)
    user_ids = np.array([u or "" for u in train.users], dtype=object)
    vdata = _validation_data(valid, sampler, scorer, config)

    report = SetTrainReport(
        sets=all_sets.counts(), train_sets=len(train), valid_sets=len(valid), valid_is_train=valid_is_train,
        preference_pairs=int(has_user.sum()), prior=prior,
    )
    work = Path(work_dir) if work_dir is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        (work / "metrics.jsonl").unlink(missing_ok=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.05, 1.0 - s / max(1, total)))
    bce = nn.BCEWithLogitsLoss(reduction="none")

    net.eval()
    metrics = _validate(scorer, vdata, valid_is_train)
    key = config.select_on if config.select_on in metrics else "auc"
    report.selected_on = key
    report.best_metric = metrics[key]
    report.prior_metrics = dict(metrics)
    best_state = model_state(net)
    # The best epoch whose corruption AUCs all clear the prior's (epoch 0 does, trivially).
    best_clear: tuple[int, float, dict] = (0, metrics[key], best_state)
    _log(work, report, {"epoch": 0, "step": 0, **metrics})
    bad_epochs = 0
    out_of_time = False
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = rng.permutation(len(train))
        losses: list[float] = []
        with progress_bar(f"set scorer {epoch}/{config.epochs}", total=steps_per_epoch, enabled=show_progress) as advance:
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                if len(idx) == 0:
                    continue
                loss = _step(scorer, sampler, train, idx, users, has_user, user_ids, config, rng, bce)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                report.steps += 1
                losses.append(float(loss.detach()))
                advance(1, loss=float(np.mean(losses[-20:])))
                if config.max_minutes is not None and time.monotonic() - began > config.max_minutes * 60:
                    out_of_time = True
                    break
        net.eval()
        metrics = _validate(scorer, vdata, valid_is_train)
        report.epochs_run = epoch
        _log(work, report, {"epoch": epoch, "step": report.steps, "loss": float(np.mean(losses)) if losses else None, **metrics})
        if metrics[key] > report.best_metric + 1e-6:
            report.best_metric, report.best_epoch, bad_epochs = metrics[key], epoch, 0
            best_state = model_state(net)
        else:
            bad_epochs += 1
        if clears_prior(metrics, report.prior_metrics) and metrics[key] > best_clear[1] + 1e-6:
            best_clear = (epoch, metrics[key], best_state if report.best_epoch == epoch else model_state(net))
        if bad_epochs >= config.patience or out_of_time:
            break
    candidates = [(report.best_epoch, best_state)]
    if best_clear[0] not in (0, report.best_epoch):
        candidates.append((best_clear[0], best_clear[2]))
    _select_gate(scorer, vdata, valid_is_train, report, candidates, key)
    net.eval()
    if work is not None:
        from safetensors.torch import save_file

        atomic_write_file(work / "best.safetensors", lambda tmp, state=model_state(net): save_file(state, str(tmp)))
    report.seconds = time.monotonic() - began
    # Served with the statistics of every set: validation sets are real data too.
    cooc_all = CoocStats.from_sets(all_sets.rows, n_items) if len(valid) and not valid_is_train else cooc_train
    return SetScorer(net, item_vectors, cooc_all, config.history_max_items, config.history_half_life, report.to_dict())


def clears_prior(metrics: dict[str, float], prior: dict[str, float], margin: float = 0.0) -> bool:
    """Whether the validation corruption AUC of every kind is at least the prior's (+ margin)."""
    return all(metrics[f"auc_{kind}"] >= prior[f"auc_{kind}"] + margin for kind in CORRUPTIONS if f"auc_{kind}" in prior)


def _select_gate(
    scorer: SetScorer,
    data: _Validation,
    own: bool,
    report: SetTrainReport,
    candidates: list[tuple[int, dict[str, torch.Tensor]]],
    key: str,
) -> None:
    """Load the candidate (epoch, gate) with the best validation `key` among those whose
    corruption AUCs all clear the prior's; the prior (gate 0) wins ties and always qualifies."""
    by_epoch = {h["epoch"]: h for h in report.history}
    best: tuple[float, int, float, dict[str, float]] = (report.prior_metrics[key], candidates[0][0], 0.0, report.prior_metrics)
    for epoch, state in candidates:
        if epoch == 0:  # untrained: the residual is zero, every gate is the prior
            continue
        load_model_state(scorer.net, state)
        scorer.net.eval()
        for gate in GATES:
            if gate == 1.0:
                metrics = {k: v for k, v in by_epoch[epoch].items() if k not in ("epoch", "step", "loss")}
            else:
                scorer.net.set_gate(gate)
                metrics = _validate(scorer, data, own)
            ok = clears_prior(metrics, report.prior_metrics)
            report.gates.append({"epoch": epoch, "gate": gate, "qualifies": ok, **metrics})
            if ok and metrics[key] > best[0] + 1e-6:
                best = (metrics[key], epoch, gate, metrics)
        scorer.net.set_gate(1.0)
    report.gates.append({"epoch": candidates[0][0], "gate": 0.0, "qualifies": True, **report.prior_metrics})
    report.best_metric, report.best_epoch, report.residual_gate, report.valid_metrics = best[0], best[1], best[2], dict(best[3])
    load_model_state(scorer.net, dict(candidates)[best[1]])
    scorer.net.set_gate(best[2])


def _step(
    scorer: SetScorer,
    sampler: NegativeSampler,
    train: TrainingSets,
    idx: np.ndarray,
    users: np.ndarray,
    has_user: np.ndarray,
    user_ids: np.ndarray,
    config: SetTrainConfig,
    rng: np.random.Generator,
    bce: nn.Module,
) -> torch.Tensor:
    net, cooc = scorer.net, scorer.cooc
    b = len(idx)
    sets = [_subsample(train.rows[i], config.max_set_size, rng) for i in idx]
    hidden_pos = [int(rng.integers(len(s))) for s in sets]
    true = np.array([s[p] for s, p in zip(sets, hidden_pos, strict=True)], np.int64)
    rest = pad([np.delete(s, p) for s, p in zip(sets, hidden_pos, strict=True)], max(len(s) for s in sets) - 1)
    corrupt = sampler.negatives(true, rest, config.negatives, rng)  # (B, C) for the pointwise loss

    # Candidates: the whole catalog (or a random part of it, plus every item needed here).
    n = scorer.n_items
    if n <= config.softmax_items:
        pool = np.arange(n)
    else:
        pool = np.unique(np.concatenate([rng.choice(n, config.softmax_items, replace=False), true, corrupt.ravel()]))
    column = np.full(n, -1, np.int64)
    column[pool] = np.arange(len(pool))
    true_col = column[true]

    x, pop, pair, mask = scorer.set_features(rest, own=True)
    pop_c = np.broadcast_to(cooc.popularity_feature(pool), (b, len(pool))).copy()
    cross = scorer.cross_features(rest, pool)
    # The true item was in this training set: its own contribution comes out, as for the rest.
    rows = np.arange(b)
    pop_c[rows, true_col] = cooc.popularity_feature(true, True)
    own_rest = rest >= 0
    cross[rows, true_col] = cooc.pair_features(rest, true[:, None], own_rest, True).sum(axis=1)
    with_user = has_user[idx] & (rng.random(b) >= config.user_dropout)
    logits = net.complete(
        x, pop, pair, mask, scorer._x_all[torch.from_numpy(pool)], torch.from_numpy(pop_c), torch.from_numpy(cross),
        torch.from_numpy(users[idx]), torch.from_numpy(with_user),
    )
    in_rest = np.zeros((b, len(pool)), bool)
    rest_cols = column[np.maximum(rest, 0)]
    valid_rest = own_rest & (rest_cols >= 0)
    in_rest[np.repeat(rows, rest.shape[1])[valid_rest.ravel()], rest_cols[valid_rest]] = True
    in_rest_t = torch.from_numpy(in_rest)
    listwise = nn.functional.cross_entropy(logits.masked_fill(in_rest_t, NEG), torch.from_numpy(true_col))

    # Pointwise: real set (1) vs corrupted sets (0), balanced, so that scores compare across sets.
    corrupt_cols = column[corrupt]
    ok = ~np.take_along_axis(in_rest, corrupt_cols, axis=1) & (corrupt != true[:, None])
    pos = logits[torch.from_numpy(rows), torch.from_numpy(true_col)]
    neg = torch.gather(logits, 1, torch.from_numpy(corrupt_cols))
    ok_t = torch.from_numpy(ok).float()
    pointwise = 0.5 * bce(pos, torch.ones_like(pos)).mean()
    pointwise = pointwise + 0.5 * (bce(neg, torch.zeros_like(neg)) * ok_t).sum() / torch.clamp(ok_t.sum(), min=1.0)
    loss = listwise + pointwise

    users_here = np.flatnonzero(has_user[idx])
    if config.preference_weight > 0 and len(users_here) >= 2:
        other = np.roll(users_here, 1 + int(rng.integers(len(users_here) - 1)))
        differ = user_ids[idx[users_here]] != user_ids[idx[other]]
        if differ.any():
            mine, theirs = users_here[differ], other[differ]
            full = pad([sets[i] for i in mine])
            fx, fpop, fpair, fmask = scorer.set_features(full, own=True)
            p_pos = net(fx, fpop, fpair, fmask, torch.from_numpy(users[idx[mine]]))[1]
            p_neg = net(fx, fpop, fpair, fmask, torch.from_numpy(users[idx[theirs]]))[1]
            pref_logits = torch.cat([p_pos, p_neg])
            pref_labels = torch.cat([torch.ones_like(p_pos), torch.zeros_like(p_neg)])
            loss = loss + config.preference_weight * bce(pref_logits, pref_labels).mean()
    return loss


def _log(work: Path | None, report: SetTrainReport, record: dict) -> None:
    report.history.append(record)
    if work is None:
        return
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with (work / "metrics.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(clean) + "\n")
