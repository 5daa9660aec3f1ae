"""Contrastive fine-tuning of the two towers.

AdamW with warm-up and linear decay, gradient clipping, weight decay, bf16 autocast on CUDA,
validation Recall@K / NDCG@K every epoch with full ranking over the catalog, early stopping, best
weights kept, resumable from the last epoch, seeded, progress bar, metrics appended as JSONL.

Data-parallel under `torchrun` (recs/distributed.py): every rank draws the same seeded global batch
of `batch_size` pairs and encodes its contiguous slice; item vectors are gathered across ranks so
each rank's rows see the whole global batch's negatives, and DDP averages the gradients: a step
equals the single-process step on the same global batch. Hard negatives are mined by every rank
from the same item vectors with the same rng (so they are the same items) and encoded on each rank.
Rank 0 alone validates, logs, saves checkpoints and best weights; its item vectors and its
best-epoch / stop decisions are broadcast so that all ranks act together.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recs.device import torch_device
from recs.distributed import (
    broadcast_array,
    broadcast_flags,
    data_parallel,
    gather_with_grad,
    init_process_group,
    reduce_step,
)
from recs.errors import ConfigError
from recs.io import atomic_write_file
from recs.progress import progress_bar
from recs.retrieval.checkpoint import (
    has_training_state,
    load_model_state,
    load_training_state,
    model_state,
    save_training_state,
)
from recs.retrieval.config import TrainConfig
from recs.retrieval.encode import encode_items, encode_users, tokenize
from recs.retrieval.history import history_means
from recs.retrieval.losses import in_batch_softmax_loss
from recs.retrieval.metrics import hit_matrix, mean_ranking_metrics
from recs.retrieval.pairs import Catalog, TrainingExamples, UserState
from recs.retrieval.towers import TwoTowerModel


@dataclass
class ValidationSet:
    states: list[UserState]
    relevant: list[frozenset[int]]


@dataclass
class TrainReport:
    steps: int = 0
    epochs_run: int = 0
    best_epoch: int = 0
    best_metric: float = -1.0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    pairs: int = 0


def make_validation_set(
    states: dict[str, UserState], targets: pl.DataFrame, catalog: Catalog, max_users: int, seed: int
) -> ValidationSet:
    """Targets (user_id, item_id) of users with a state; a seeded sample of at most `max_users`."""
    grouped = targets.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    users = [u for u in grouped["user_id"].to_list() if u in states]
    rng = np.random.default_rng(seed)
    if len(users) > max_users:
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    relevant_of = dict(zip(grouped["user_id"].to_list(), grouped["item_id"].to_list(), strict=True))
    rel = [frozenset(catalog.row_of[i] for i in relevant_of[u] if i in catalog.row_of) for u in users]
    return ValidationSet(states=[states[u] for u in users], relevant=rel)


def _freeze_backbone_layers(backbone: torch.nn.Module, train_layers: int | None) -> None:
    """Freeze embeddings and all but the top `train_layers` transformer layers (None: train all)."""
    if train_layers is None:
        return
    for param in backbone.parameters():
        param.requires_grad = False
    layers = list(backbone.encoder.layer) if hasattr(backbone, "encoder") else []
    # More than the model has: all of them (a negative start would keep only the last few).
    for layer in layers[max(0, len(layers) - train_layers) :] if train_layers else []:
        for param in layer.parameters():
            param.requires_grad = True


def _freeze(model: TwoTowerModel, train_layers: int | None) -> None:
    for backbone in {id(model.item_backbone): model.item_backbone, id(model.user_backbone): model.user_backbone}.values():
        _freeze_backbone_layers(backbone, train_layers)


def _apply_lora(model: TwoTowerModel, r: int) -> None:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["query", "value"], lora_dropout=0.05)
    peft_backbone = get_peft_model(model.item_backbone, config)
    shared = model.user_backbone is model.item_backbone
    model.item_backbone = peft_backbone
    model.user_backbone = peft_backbone if shared else get_peft_model(model.user_backbone, config)


def validate(
    model: TwoTowerModel, tokenizer, catalog: Catalog, valid: ValidationSet, ks: Sequence[int], device: str
) -> tuple[dict[str, float], np.ndarray]:
    item_vecs = encode_items(model, tokenizer, catalog.texts, device=device)
    if not valid.states:
        return {}, item_vecs
    means = history_means(
        [s.history_rows for s in valid.states], item_vecs, model.config.history_max_items, model.config.history_half_life
    )
    user_vecs = encode_users(model, tokenizer, [s.text for s in valid.states], means, device=device)
    k = min(max(ks), len(catalog))
    scores = user_vecs @ item_vecs.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    ranked = np.take_along_axis(top, order, axis=1)
    hits, n_rel = hit_matrix(ranked.tolist(), [set(r) for r in valid.relevant], max(ks))
    return mean_ranking_metrics(hits, n_rel, ks), item_vecs


def train_towers(
    model: TwoTowerModel,
    tokenizer,
    catalog: Catalog,
    examples: TrainingExamples,
    valid: ValidationSet,
    config: TrainConfig,
    work_dir: Path,
    resume: bool = False,
    show_progress: bool = True,
) -> TrainReport:
    """Fine-tune in place; on return `model` holds the best validation weights (on every rank)."""
    ranks = init_process_group()
    if config.batch_size % ranks.size:
        raise ConfigError(f"batch_size {config.batch_size} is the global batch: it must divide among {ranks.size} processes")
    main = ranks.is_main
    show_progress = show_progress and main
    device = torch_device()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.lora:
        _apply_lora(model, config.lora_r)
    else:
        _freeze(model, config.train_layers)
    model.to(device)
    if main:
        work_dir.mkdir(parents=True, exist_ok=True)
    metrics_log = work_dir / "metrics.jsonl"

    head_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(("item_backbone", "user_backbone"))]
    body_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(("item_backbone", "user_backbone"))]
    optimizer = torch.optim.AdamW(
        [{"params": body_params, "lr": config.lr}, {"params": head_params, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    n_pairs = len(examples) if config.max_pairs_per_epoch is None else min(len(examples), config.max_pairs_per_epoch)
    steps_per_epoch = max(1, n_pairs // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(config.warmup_ratio * total_steps)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    item_counts = np.bincount(examples.pair_item, minlength=len(catalog)).astype(np.float64)
    log_q = np.log(np.maximum(item_counts, 1.0) / max(1.0, item_counts.sum())).astype(np.float32)

    report = TrainReport(pairs=len(examples))
    start_epoch = 0
    best_state = model_state(model)
    bad_epochs = 0
    checkpoint = work_dir / "checkpoint"
    # Rank 0 looks first (and restores an interrupted save); the others then read the same files.
    (resuming,) = broadcast_flags(main and resume and has_training_state(checkpoint))
    if resuming:
        meta = load_training_state(checkpoint, model, optimizer)
        start_epoch = report.epochs_run = meta["epoch"]
        report.steps, report.best_metric, report.best_epoch = meta["steps"], meta["best_metric"], meta["best_epoch"]
        bad_epochs = meta["bad_epochs"]
        rng = np.random.default_rng([config.seed, start_epoch])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor, last_epoch=report.steps - 1)
        if (work_dir / "best.safetensors").is_file():
            from safetensors.torch import load_file

            best_state = load_file(work_dir / "best.safetensors")

    def validated() -> tuple[dict[str, float], np.ndarray]:
        """Rank 0's metrics; every rank gets its item vectors (history means, hard negatives)."""
        metrics, vecs = validate(model, tokenizer, catalog, valid, config.valid_ks, device) if main else ({}, None)
        return metrics, broadcast_array(vecs)

    if ranks.distributed:
        # Each rank its own dropout masks (one seed would give every rank's slice the same ones),
        # still a function of (seed, rank, step), so a resumed run draws the same.
        torch.manual_seed(int(np.random.SeedSequence([config.seed, ranks.rank, report.steps]).generate_state(1)[0]))
    net = data_parallel(model)
    metrics, item_vecs = validated()
    if start_epoch == 0:
        report.best_metric = metrics.get(f"ndcg@{config.valid_ks[0]}", -1.0)
        if main:
            _log(metrics_log, {"epoch": 0, "step": 0, **metrics})
        report.history.append({"epoch": 0, **metrics})
    began = time.monotonic()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else _nullcontext()
    out_of_time = False
    for epoch in range(start_epoch + 1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(examples))[: steps_per_epoch * config.batch_size]
        losses: list[float] = []
        with progress_bar(f"epoch {epoch}/{config.epochs}", total=steps_per_epoch, enabled=show_progress) as advance:
            for step in range(steps_per_epoch):
                rows = order[step * config.batch_size : (step + 1) * config.batch_size]
                loss = _step(net, model, tokenizer, catalog, examples, rows, item_vecs, log_q, config, device, autocast, rng,
                             ranks.rank, ranks.size)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
                optimizer.step()
                scheduler.step()
                report.steps += 1
                late = config.max_minutes is not None and (time.monotonic() - began) > config.max_minutes * 60
                step_loss, out_of_time = reduce_step(float(loss.detach()), late)
                losses.append(step_loss)
                advance(1, loss=float(np.mean(losses[-20:])))
                if out_of_time:
                    break
        metrics, item_vecs = validated()
        key = f"ndcg@{config.valid_ks[0]}"
        record = {"epoch": epoch, "step": report.steps, "loss": float(np.mean(losses)), **metrics,
                  "history_weight": float(model.history_weight().detach())}
        report.history.append(record)
        report.epochs_run = epoch
        # No validation users (no user with a basket after an earlier one): nothing to stop
        # early on, so every epoch counts as the best and the last one is kept.
        score = metrics.get(key)
        (improved,) = broadcast_flags(main and (score is None or score > report.best_metric))
        if improved:
            report.best_epoch, bad_epochs = epoch, 0
            report.best_metric = report.best_metric if score is None else score
            best_state = model_state(model)
        else:
            bad_epochs += 1
        if main:
            _log(metrics_log, record)
            if improved:
                from safetensors.torch import save_file

                atomic_write_file(work_dir / "best.safetensors", lambda tmp, state=best_state: save_file(state, tmp))
            save_training_state(
                checkpoint, model, optimizer,
                {"epoch": epoch, "steps": report.steps, "best_metric": report.best_metric,
                 "best_epoch": report.best_epoch, "bad_epochs": bad_epochs},
            )
        # Rank 0's checkpoint is complete before any rank goes on (a crash after this resumes here).
        (stop,) = broadcast_flags(main and (bad_epochs >= config.patience or out_of_time))
        if stop:
            break
    load_model_state(model, best_state)
    model.eval()
    report.seconds = time.monotonic() - began
    return report


def _step(net, model, tokenizer, catalog, examples, rows, item_vecs, log_q, config, device, autocast, rng, rank=0, ranks=1):
    """The loss of this rank's slice of the global batch `rows` (the whole batch in one process).
    `net` is `model` or its DDP wrapper (the forward that syncs gradients)."""
    item_rows = examples.pair_item[rows]  # the global batch's positives: every rank's columns
    local = slice(rank * (len(rows) // ranks), (rank + 1) * (len(rows) // ranks))
    state_rows = examples.pair_state[rows][local]
    states = [examples.states[s] for s in state_rows]
    user_batch = tokenize(tokenizer, [s.text or " " for s in states], model.config.max_user_tokens, device)
    item_batch = tokenize(tokenizer, [catalog.texts[i] for i in item_rows[local]], model.config.max_item_tokens, device)
    means = torch.from_numpy(
        history_means([s.history_rows for s in states], item_vecs, model.config.history_max_items, model.config.history_half_life)
    ).to(device)
    also_bought = None
    if config.mask_also_bought:
        baskets = [examples.basket_items[s] for s in state_rows]
        also_bought = torch.tensor([[int(i) in b for i in item_rows] for b in baskets], dtype=torch.bool, device=device)
    hard_ids = hard_batch = None
    if config.hard_negatives:
        hard_rows = _mine_hard_negatives(item_vecs, item_rows, config.hard_negatives, rng)
        hard_ids = torch.from_numpy(hard_rows).to(device)
        hard_batch = tokenize(tokenizer, [catalog.texts[i] for i in hard_rows], model.config.max_item_tokens, device)
    with autocast:
        users, items, hard_vecs = net(user_batch, item_batch, means, hard_batch)
        loss = in_batch_softmax_loss(
            users.float(), gather_with_grad(items.float()), torch.from_numpy(item_rows).to(device), config.temperature,
            torch.from_numpy(log_q[item_rows]).to(device) if config.logq_correction else None,
            also_bought, None if hard_vecs is None else hard_vecs.float(), hard_ids, row_offset=local.start,
        )
    return loss


def _mine_hard_negatives(item_vecs: np.ndarray, positives: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Items most similar to the batch's positives (but not positives): substitutes the towers confuse."""
    sims = item_vecs[positives] @ item_vecs.T
    sims[:, positives] = -np.inf
    pool = np.unique(np.argpartition(-sims, min(10, sims.shape[1] - 1), axis=1)[:, :10])
    pool = pool[~np.isin(pool, positives)]
    if len(pool) == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(pool, size=min(n, len(pool)), replace=False).astype(np.int64)


def _log(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}) + "\n")


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
