"""Batched, gradient-free encoding of item and user texts with the towers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from recs.encoders.batching import length_batches, pad_rows
from recs.progress import progress_bar
from recs.retrieval.towers import TwoTowerModel


def tokenize(tokenizer, texts: Sequence[str], max_tokens: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    batch = tokenizer(
        list(texts), truncation=True, max_length=max_tokens, padding=True, return_tensors="pt"
    )
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}


@torch.no_grad()
def encode_items(
    model: TwoTowerModel,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 128,
    device: str = "cpu",
    show_progress: bool = False,
) -> np.ndarray:
    return _encode(model, tokenizer, texts, "item", None, batch_size, device, show_progress)


@torch.no_grad()
def encode_users(
    model: TwoTowerModel,
    tokenizer,
    texts: Sequence[str],
    history_means: np.ndarray | None,
    batch_size: int = 128,
    device: str = "cpu",
    show_progress: bool = False,
) -> np.ndarray:
    return _encode(model, tokenizer, texts, "user", history_means, batch_size, device, show_progress)


def _encode(
    model: TwoTowerModel,
    tokenizer,
    texts: Sequence[str],
    tower: Literal["item", "user"],
    history_means: np.ndarray | None,
    batch_size: int,
    device: str,
    show_progress: bool,
) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = np.zeros((len(texts), model.dim), dtype=np.float32)
    max_tokens = model.config.max_item_tokens if tower == "item" else model.config.max_user_tokens
    if not len(texts):
        return out
    # Tokenised once, sorted by token count, padded per batch (recs.encoders.batching): a batch
    # pads only to its own longest text.
    ids = tokenizer([t or " " for t in texts], truncation=True, max_length=max_tokens)["input_ids"]
    pad_id = int(tokenizer.pad_token_id or 0)
    with progress_bar(f"encoding {tower}s", total=len(texts), enabled=show_progress) as advance:
        for rows in length_batches([len(i) for i in ids], batch_size):
            input_ids, mask = pad_rows([ids[i] for i in rows], pad_id)
            batch = {"input_ids": torch.from_numpy(input_ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}
            if tower == "item":
                vectors = model.encode_items(**batch)
            else:
                hist = None
                if history_means is not None:
                    hist = torch.from_numpy(history_means[rows]).to(device)
                vectors = model.encode_users(**batch, history_mean=hist)
            out[rows] = vectors.float().cpu().numpy()
            advance(len(rows))
    model.train(was_training)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


TOWER_FILES = ("tokenizer", "backbone_config.json", "towers.safetensors")


class TorchTowers:
    """The towers as a `recs.protocols.TowerEncoders` (and `WritableTowers`): the trained
    TwoTowerModel and its Hugging Face tokenizer."""

    def __init__(self, model: TwoTowerModel, tokenizer, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.device = device

    def to(self, device: str) -> TorchTowers:
        """The same towers encoding on `device` (a batch worker with a GPU: "cuda")."""
        return TorchTowers(self.model, self.tokenizer, device)

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def encode_items(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return encode_items(self.model, self.tokenizer, texts, device=self.device, show_progress=show_progress)

    def encode_users(self, texts: list[str], history_means: np.ndarray) -> np.ndarray:
        return encode_users(self.model, self.tokenizer, texts, history_means, device=self.device)

    def write(self, writer) -> list[str]:
        """Tokenizer, backbone config and weights into an `ArtifactWriter`; the files written."""
        from recs.retrieval.checkpoint import model_state

        self.tokenizer.save_pretrained(str(writer.path / "tokenizer"))
        writer.write_json("backbone_config.json", json.loads(self.model.item_backbone.config.to_json_string()))
        writer.write_safetensors("towers.safetensors", model_state(self.model))
        return list(TOWER_FILES)

    @classmethod
    def read(cls, artifact, config) -> TorchTowers:
        """The towers written by `write`, from an open artifact and its TowerConfig."""
        from transformers import AutoModel, BertConfig

        from recs.encoders.backbone import load_tokenizer
        from recs.retrieval.checkpoint import load_model_state

        backbone_config = BertConfig.from_dict(artifact.read_json("backbone_config.json"))
        model = TwoTowerModel(AutoModel.from_config(backbone_config), config)
        load_model_state(model, artifact.read_safetensors("towers.safetensors", framework="pt"))
        from recs.artifacts import read_artifact_file

        return cls(model, read_artifact_file(artifact.file("tokenizer"), "tokenizer", load_tokenizer))
