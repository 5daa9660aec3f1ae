"""The peer of benchmarks/load.py (`peer_st_faiss`): the service a team would write by hand.

Plain FastAPI: on startup, every item's title is encoded once with MiniLM (an ONNX graph run by
onnxruntime, tokenised with `tokenizers`, mean-pooled and normalised the sentence-transformers way)
into a FAISS IndexFlatIP, and each user's last 10 titles are kept in a dict from the shop's events.
`POST /recommend {"user_id", "k"}` encodes those titles as one text and searches FAISS. No ranker,
no filters, no event store: the floor a `recs` service is compared with.

    PEER_GRAPH=minilm.onnx PEER_TOKENIZER=tokenizer.json PEER_DATA=<folder with items.parquet and
    events.parquet> [PEER_THREADS=1] uvicorn benchmarks.load_peer:create_app --factory

`build_graph` writes the graph (untuned MiniLM, last_hidden_state; int8 when asked) once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
HISTORY = 10  # titles per user text


class Query(BaseModel):
    user_id: str
    k: int = Field(default=10, ge=1, le=200)


def build_graph(backbone: str | Path | None, out: Path, int8: bool = True) -> Path:
    """Export the untuned backbone (None: the packaged MiniLM) to `out` (input_ids, attention_mask
    -> last_hidden_state); with `int8`, its dynamically quantised graph. Kept when it exists."""
    if out.is_file():
        return out
    from torch import nn

    from recs.encoders.backbone import load_backbone, load_tokenizer
    from recs.export.quantize import quantize_graph
    from recs.export.towers import example_batch, export_module

    class Plain(nn.Module):
        input_names = ("input_ids", "attention_mask")
        output_name = "last_hidden_state"

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model
            tokens = {0: "batch", 1: "sequence"}
            self.dynamic_axes = {"input_ids": tokens, "attention_mask": tokens, "last_hidden_state": tokens}

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = out.with_name(out.stem + ".fp32.onnx") if int8 else out
    export_module(Plain(load_backbone(backbone)), example_batch(load_tokenizer(backbone)), fp32)
    if int8:
        quantize_graph(fp32, out)
    return out


class Encoder:
    def __init__(self, graph: Path, tokenizer: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)


def create_app() -> FastAPI:
    import faiss
    import polars as pl

    data = Path(os.environ["PEER_DATA"])
    encode = Encoder(Path(os.environ["PEER_GRAPH"]), Path(os.environ["PEER_TOKENIZER"]), int(os.environ.get("PEER_THREADS", "1")))
    items = pl.read_parquet(data / "items.parquet", columns=["item_id", "title"])
    ids, titles = items["item_id"].cast(pl.Utf8).to_list(), items["title"].fill_null("").cast(pl.Utf8).to_list()
    index = faiss.IndexFlatIP(encode(titles[:1]).shape[1])
    for start in range(0, len(titles), 64):
        index.add(encode(titles[start:start + 64]))
    title_of = dict(zip(ids, titles, strict=True))
    events = pl.read_parquet(data / "events.parquet", columns=["user_id", "item_id", "timestamp"]).sort("timestamp")
    recent = events.group_by("user_id", maintain_order=True).agg(pl.col("item_id").tail(HISTORY))
    texts = {str(u): ". ".join(title_of.get(str(i), "") for i in row) for u, row in recent.iter_rows()}

    app = FastAPI(title="peer: MiniLM + FAISS")

    @app.get("/ready")
    def ready() -> dict[str, Any]:
        return {"ready": True, "items": len(ids)}

    @app.post("/recommend")
    def recommend(query: Query) -> dict[str, Any]:
        text = texts.get(query.user_id)
        if text is None:
            raise HTTPException(404, f"unknown user {query.user_id!r}")
        scores, rows = index.search(encode([text]), query.k)
        return {"items": [{"item_id": ids[r], "title": titles[r], "score": float(s)}
                          for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]}

    return app
