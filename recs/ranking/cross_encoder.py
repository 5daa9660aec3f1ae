"""`CrossEncoderReranker`: a BERT cross-encoder over `[CLS] user text [SEP] item text + relation [SEP]`.

It is a residual on the first stage: the served score of a reranked item is the ranker's raw logit
plus the cross-encoder's (unsquashed) logit. Initialised from the towers' backbone with a zero head
(so it starts as the ranker alone); trained listwise on the lists it serves (softmax cross-entropy of
ranker logit + CE logit against the normalised labels) with the towers' trainer habits: validation
every epoch, early stopping, best weights kept, resumable, seeded, progress bar, metrics as JSONL.

Under torchrun (recs/distributed.py) each step's queries are shared among the ranks (contiguous
slices), the gradients averaged over ranks so that a step is the one-process step on the same
queries; rank 0 alone validates, logs and checkpoints, and its decisions are broadcast.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recs.device import torch_device
from recs.distributed import average_gradients, broadcast_flags, init_process_group, reduce_step
from recs.encoders.pairs import PairTokenizer
from recs.encoders.pooling import mean_pool
from recs.errors import ArtifactError
from recs.progress import progress_bar
from recs.ranking.budget import PairBudget
from recs.ranking.config import CROSS_ENCODER_COMBINATION, CrossEncoderConfig
from recs.retrieval.checkpoint import (
    has_training_state,
    load_model_state,
    load_training_state,
    model_state,
    save_training_state,
)
from recs.retrieval.metrics import ndcg_from_hits
from recs.retrieval.trainer import TrainReport, _freeze_backbone_layers


class CrossEncoderModel(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(backbone.config.hidden_size), 1)
        # A zero residual at the start: the untrained model serves the ranker's order unchanged,
        # and the best-epoch rule keeps it so unless training beats the ranker on validation.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask)).squeeze(-1)


@dataclass
class RerankQuery:
    user_text: str
    item_texts: list[str]  # item text + relation words, one per candidate
    labels: np.ndarray  # 1.0 for items of the held-out basket
    base: np.ndarray | None = None  # the first stage's raw logits the CE is a residual on (None: 0)

    def base_scores(self) -> np.ndarray:
        return np.zeros(len(self.item_texts), dtype=np.float32) if self.base is None else self.base.astype(np.float32)



# The cross-encoder reports like the towers' trainer (steps, epochs, best epoch, seconds, history).
CrossEncoderReport = TrainReport


class CrossEncoderReranker:
    def __init__(self, model: CrossEncoderModel, tokenizer, config: CrossEncoderConfig | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or CrossEncoderConfig()
        self.report: CrossEncoderReport | None = None
        self.budget = PairBudget()  # this scorer's measured cost per pair, shared by its requests
        self._pairs: PairTokenizer | None = None  # built on first use, for config.max_tokens

    def _batch(self, user_text: str, item_texts: list[str], device: str) -> dict[str, torch.Tensor]:
        """The pairs (user text, each item text) as the Hugging Face tokenizer makes them
        (longest-first truncation to `max_tokens`, padded to the longest), by `PairTokenizer`
        when it is a fast one: the user's text tokenised once, not once per pair."""
        hf = self.tokenizer
        backend = getattr(hf, "backend_tokenizer", None)
        sides = (getattr(hf, "truncation_side", "right"), getattr(hf, "padding_side", "right"))
        if backend is None or sides != ("right", "right"):  # PairTokenizer cuts and pads on the right
            enc = hf([user_text or " "] * len(item_texts), item_texts, truncation="longest_first",
                     max_length=self.config.max_tokens, padding=True, return_tensors="np")
        else:
            if self._pairs is None or self._pairs.max_length != self.config.max_tokens:
                self._pairs = PairTokenizer(backend, self.config.max_tokens, hf.pad_token_id or 0, getattr(hf, "pad_token_type_id", 0) or 0)
            enc = self._pairs(user_text or " ", item_texts)
        names = ("input_ids", "attention_mask", "token_type_ids") if "token_type_ids" in hf.model_input_names else ("input_ids", "attention_mask")
        return {k: torch.from_numpy(np.asarray(enc[k], dtype=np.int64)).to(device) for k in names}

    @torch.no_grad()
    def score(self, user_text: str, item_texts: list[str], deadline: float | None = None) -> np.ndarray | None:
        """Scores for each item text; None when they cannot be had before `deadline`
        (time.monotonic()); see `recs.ranking.budget`."""
        if not item_texts:
            return np.zeros(0, dtype=np.float32)
        device = next(self.model.parameters()).device.type

        def chunk(start: int, stop: int) -> np.ndarray:
            return self.model(**self._batch(user_text, item_texts[start:stop], device)).float().cpu().numpy()

        return self.budget.run(len(item_texts), chunk, deadline)

    # -- training ---------------------------------------------------------------------------------

    def fit(self, queries: list[RerankQuery], work_dir: Path, resume: bool = False, show_progress: bool = True) -> CrossEncoderReport:
        """Listwise training: each step takes `queries_per_step` queries (the served top R plus a
        few others); loss = softmax cross-entropy of base + CE logit against the normalised labels."""
        config = self.config
        ranks = init_process_group()
        main = ranks.is_main
        show_progress = show_progress and main
        device = torch_device()
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        # A list whose items are all positive (or none) has nothing to reorder.
        usable = [q for q in queries if q.labels.any() and (q.labels == 0).any()]
        order = rng.permutation(len(usable))
        n_valid = max(1, int(len(usable) * config.valid_share)) if len(usable) > 5 else 0
        valid = [usable[i] for i in order[:n_valid]]
        train = [usable[i] for i in order[n_valid:]][: config.max_queries]
        _freeze_backbone_layers(self.model.backbone, config.train_layers)
        self.model.to(device)
        body = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("backbone")]
        head = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone")]
        optimizer = torch.optim.AdamW(
            [{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}], weight_decay=config.weight_decay
        )
        steps_per_epoch = max(1, len(train) // config.queries_per_step)
        total = steps_per_epoch * config.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.0, 1 - s / max(1, total))
        )
        if main:
            work_dir.mkdir(parents=True, exist_ok=True)
        report = CrossEncoderReport()
        best_state = model_state(self.model)
        bad, start_epoch = 0, 0
        checkpoint = work_dir / "ce_checkpoint"
        (resuming,) = broadcast_flags(main and resume and has_training_state(checkpoint))
        if resuming:
            meta = load_training_state(checkpoint, self.model, optimizer)
            start_epoch = report.epochs_run = meta["epoch"]
            report.steps, report.best_metric, report.best_epoch, bad = meta["steps"], meta["best_metric"], meta["best_epoch"], meta["bad_epochs"]
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scheduler.lr_lambdas[0], last_epoch=report.steps - 1)
            rng = np.random.default_rng([config.seed, start_epoch])
        if start_epoch == 0:
            report.best_metric = self.validate(valid) if main else 0.0
            # Epoch 0 is the zero residual: the first stage's own NDCG@10 on these lists.
            record = {"epoch": 0, "valid_ndcg@10": report.best_metric}
            if main:
                self._log(work_dir, record)
            report.history.append(record)
        if ranks.distributed:  # each rank its own dropout masks, a function of (seed, rank, step)
            torch.manual_seed(int(np.random.SeedSequence([config.seed, ranks.rank, report.steps]).generate_state(1)[0]))
        began = time.monotonic()
        for epoch in range(start_epoch + 1, config.epochs + 1):
            self.model.train()
            perm = rng.permutation(len(train))
            losses: list[float] = []
            out_of_time = False
            with progress_bar(f"cross-encoder epoch {epoch}/{config.epochs}", total=steps_per_epoch, enabled=show_progress) as advance:
                for step in range(steps_per_epoch):
                    batch = [train[i] for i in perm[step * config.queries_per_step : (step + 1) * config.queries_per_step]]
                    # This rank's contiguous share of the step's queries (all of them in one process).
                    share = batch[len(batch) * ranks.rank // ranks.size : len(batch) * (ranks.rank + 1) // ranks.size]
                    optimizer.zero_grad(set_to_none=True)
                    if share:
                        loss = self._listwise_loss(share, rng, device)
                        if ranks.distributed:  # averaged over ranks below: the mean over the whole step
                            loss = loss * (len(share) * ranks.size / len(batch))
                        loss.backward()
                    average_gradients(body + head)
                    torch.nn.utils.clip_grad_norm_(body + head, config.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    report.steps += 1
                    late = bool(config.max_minutes) and time.monotonic() - began > config.max_minutes * 60  # type: ignore[operator]
                    step_loss, out_of_time = reduce_step(loss.item() if share else 0.0, late)
                    losses.append(step_loss)
                    advance(1, loss=float(np.mean(losses[-20:])))
                    if out_of_time:
                        break
            metric = self.validate(valid) if main else 0.0
            record = {"epoch": epoch, "step": report.steps, "loss": float(np.mean(losses)) if losses else None, "valid_ndcg@10": metric}
            report.history.append(record)
            report.epochs_run = epoch
            (improved,) = broadcast_flags(main and metric > report.best_metric)
            if improved:
                report.best_metric, report.best_epoch, bad = metric, epoch, 0
                best_state = model_state(self.model)
            else:
                bad += 1
            if main:
                self._log(work_dir, record)
                save_training_state(checkpoint, self.model, optimizer, {
                    "epoch": epoch, "steps": report.steps, "best_metric": report.best_metric,
                    "best_epoch": report.best_epoch, "bad_epochs": bad})
            # Rank 0's checkpoint is complete before any rank goes on; all ranks stop together.
            (stop,) = broadcast_flags(main and (bad >= config.patience or out_of_time))
            if stop:
                break
        load_model_state(self.model, best_state)
        self.model.eval()
        report.seconds = time.monotonic() - began
        self.report = report
        return report

    def _listwise_loss(self, batch: list[RerankQuery], rng: np.random.Generator, device: str) -> torch.Tensor:
        del rng  # every item of a served list is scored: nothing is sampled
        losses = []
        for query in batch:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = self.model(**self._batch(query.user_text, query.item_texts, device)).float()
            combined = logits + torch.as_tensor(query.base_scores(), device=device)
            target = torch.as_tensor(query.labels / query.labels.sum(), dtype=torch.float32, device=device)
            losses.append(-(target * torch.log_softmax(combined, dim=0)).sum())
        return torch.stack(losses).mean()

    def validate(self, queries: list[RerankQuery]) -> float:
        """Mean NDCG@10 of each list ordered by base + CE logit (the served order)."""
        if not queries:
            return 0.0
        values = []
        for query in queries:
            scores = query.base_scores() + self.score(query.user_text, query.item_texts)
            values.append(list_ndcg(query.labels, scores))
        return float(np.mean(values))

    @staticmethod
    def _log(work_dir: Path, record: dict) -> None:
        with (work_dir / "cross_encoder_metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- persistence ------------------------------------------------------------------------------

    def save(self, folder: Path) -> list[str]:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file(model_state(self.model), folder / "cross_encoder.safetensors")
        (folder / "cross_encoder_backbone.json").write_text(self.model.backbone.config.to_json_string())
        meta = {"config": self.config.model_dump(), "combination": CROSS_ENCODER_COMBINATION,
                "report": self.report.__dict__ if self.report else None}
        (folder / "cross_encoder.json").write_text(json.dumps(meta, indent=1))
        return ["cross_encoder.safetensors", "cross_encoder_backbone.json", "cross_encoder.json"]

    @classmethod
    def load(cls, folder: Path, tokenizer) -> CrossEncoderReranker:
        from safetensors.torch import load_file
        from transformers import AutoModel, BertConfig

        from recs.artifacts import read_artifact_file

        try:
            backbone_config = BertConfig.from_dict(json.loads((folder / "cross_encoder_backbone.json").read_text()))
            meta = json.loads((folder / "cross_encoder.json").read_text())
        except (OSError, ValueError) as err:
            raise ArtifactError(f"{folder}: cannot load cross-encoder: {err}") from None
        if meta.get("combination") != CROSS_ENCODER_COMBINATION:
            raise ArtifactError(f"{folder}: the cross-encoder was trained for a second-stage ranker (an older recs), "
                                "not as a residual on the ranker: run `recs train-ranker` again")
        model = CrossEncoderModel(AutoModel.from_config(backbone_config))
        weights = read_artifact_file(folder / "cross_encoder.safetensors", "safetensors", load_file)
        load_model_state(model, weights)
        reranker = cls(model, tokenizer, CrossEncoderConfig.parse_dict(meta["config"]))
        if meta.get("report"):
            reranker.report = CrossEncoderReport(**meta["report"])
        return reranker


def list_ndcg(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """NDCG@k of one list ordered by `scores` (stable), all its positives counted as relevant."""
    order = np.argsort(-scores, kind="stable")
    n_rel = np.array([int((labels > 0).sum())])
    if not n_rel[0]:
        return 0.0
    return float(ndcg_from_hits(labels[order][None, :k] > 0, n_rel, k)[0])
