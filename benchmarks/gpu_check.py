"""GPU check: the towers' and the cross-encoder's training loops on CUDA (bf16 autocast), timed.

    python benchmarks/gpu_check.py [--tokenizer DIR] [--out FILE]

Runs on a machine with a CUDA GPU and torch, transformers, polars, pydantic, rich and scipy (no
faiss, lightgbm or model weights needed): a random BERT shaped like all-MiniLM-L6-v2 (6 layers,
hidden 384) with MiniLM's tokenizer, the demo shop, and for several (batch size, trained layers)
settings: contrastive steps per second of `train_towers`, the loss falling, validation metrics
finite; then the cross-encoder's listwise training. Prints and writes one JSON summary. Random
weights: this measures speed and checks the CUDA code path, not quality.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


def minilm_shaped_bert(tokenizer_dir: Path, out: Path) -> Path:
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, default=None, help="folder with MiniLM's tokenizer files")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=4096, help="training pairs per setting")
    parser.add_argument("--settings", default="64:2,64:all,256:all,1024:all", help="batch:trained layers, ...")
    parser.add_argument("--ce-queries", type=int, default=400)
    args = parser.parse_args(argv)

    import numpy as np
    import polars as pl
    import torch

    from recs.data.demo import write_demo_shop
    from recs.data.load import load_dataset
    from recs.data.splits import leave_last_out
    from recs.data.text import render_item
    from recs.encoders.backbone import default_model_path, load_backbone, load_tokenizer
    from recs.ranking.cross_encoder import (
        CrossEncoderConfig,
        CrossEncoderModel,
        CrossEncoderReranker,
        RerankQuery,
    )
    from recs.retrieval.config import TowerConfig, TrainConfig
    from recs.retrieval.pairs import Catalog, build_examples, state_from_events
    from recs.retrieval.towers import TwoTowerModel
    from recs.retrieval.trainer import make_validation_set, train_towers

    summary: dict = {"cuda": torch.cuda.is_available(), "torch": torch.__version__}
    if torch.cuda.is_available():
        summary["gpu"] = torch.cuda.get_device_name(0)
    work = Path(tempfile.mkdtemp(prefix="recs-gpu-"))
    model_dir = minilm_shaped_bert(args.tokenizer or default_model_path(), work / "bert")
    write_demo_shop(work / "shop", seed=0)
    dataset, _ = load_dataset(work / "shop")
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    tokenizer = load_tokenizer(str(model_dir))
    catalog = Catalog.from_items(dataset.items, lambda f: [render_item(r) for r in f.iter_rows(named=True)])
    examples = build_examples(split.fit_events, catalog, new_items_only=True)
    states = {str(u[0]): state_from_events(g, catalog) for u, g in split.fit_events.group_by("user_id")}
    valid = make_validation_set(states, split.test, catalog, 500, 0)
    summary["pairs_available"] = len(examples)
    runs = []
    settings = [(int(b), None if t == "all" else int(t)) for b, t in (x.split(":") for x in args.settings.split(","))]
    for batch_size, train_layers in settings:
        model = TwoTowerModel(load_backbone(str(model_dir)), TowerConfig(model=str(model_dir)))
        config = TrainConfig(epochs=1, batch_size=batch_size, train_layers=train_layers,
                             max_pairs_per_epoch=max(args.pairs, batch_size * 4), valid_users=500)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        report = train_towers(model, tokenizer, catalog, examples, valid, config, work / f"towers-{batch_size}-{train_layers}",
                              show_progress=False)
        seconds = time.perf_counter() - began
        last = report.history[-1] if report.history else {}
        run = {"batch_size": batch_size, "train_layers": train_layers, "steps": report.steps, "seconds": round(seconds, 2),
               "pairs_per_s": round(report.steps * batch_size / max(report.seconds, 1e-9), 1),
               "loss": last.get("loss"), "valid_ndcg@10": last.get("ndcg@10"),
               "finite": all(np.isfinite(v) for v in last.values() if isinstance(v, float))}
        if torch.cuda.is_available():
            run["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(json.dumps(run), flush=True)
        runs.append(run)
    summary["towers"] = runs

    # Cross-encoder: listwise steps on queries made from the demo's training baskets.
    rng = np.random.default_rng(0)
    queries = []
    for s in range(min(args.ce_queries, len(examples.states))):
        positives = sorted(examples.basket_items[s])
        negatives = rng.choice(len(catalog), size=15, replace=False).tolist()
        rows = positives[:1] + [n for n in negatives if n not in examples.basket_items[s]]
        queries.append(RerankQuery(examples.states[s].text, [catalog.texts[r] for r in rows],
                                   np.array([1.0] + [0.0] * (len(rows) - 1), dtype=np.float32)))
    reranker = CrossEncoderReranker(CrossEncoderModel(load_backbone(str(model_dir))), tokenizer,
                                    CrossEncoderConfig(epochs=1, train_layers=None, queries_per_step=16))
    began = time.perf_counter()
    ce = reranker.fit(queries, work / "ce", show_progress=False)
    scores = reranker.score(queries[0].user_text, queries[0].item_texts)
    summary["cross_encoder"] = {"steps": ce.steps, "seconds": round(time.perf_counter() - began, 2),
                                "queries_per_s": round(ce.steps * 16 / max(ce.seconds, 1e-9), 1),
                                "valid_mrr": ce.best_metric, "scores_finite": bool(np.isfinite(scores).all())}
    print(json.dumps(summary["cross_encoder"]), flush=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        from recs.io import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    del pl
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
