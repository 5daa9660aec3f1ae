"""Two-tower retrieval against every baseline, on the demo shop and the real datasets.

    python benchmarks/retrieval.py [--datasets demo,online_retail] [--max-minutes 8] [--model PATH]

Protocol (same as benchmarks/baselines.py): next basket, `leave_last_out` (history cut at the
start of the session ending in the target basket), full ranking over the catalog. The towers train
on `split.tune_events` with each user's validation basket for early stopping, and are evaluated on
the test baskets with `split.fit_events` as history. Methods: the baselines, `zero_shot` (the
untuned backbone), `two_tower`, and `candidates` (every source merged by reciprocal-rank fusion).
Slices: all, new_to_user, cold_items. Also reports training time/steps and item-encoding items/s.
Writes benchmarks/results/retrieval.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks._runner import add_merge_flag, run_all  # noqa: E402
from benchmarks.datasets import DATASET_NAMES, load_dataset_by_name  # noqa: E402
from recs.data.schema import Dataset  # noqa: E402
from recs.io import atomic_write_text  # noqa: E402

BENCHMARK = "retrieval"
BASELINES: tuple[str, ...] = ("popularity", "repeat", "cooc", "als", "bm25", "tifu_knn", "upcf")
SLICES: tuple[str, ...] = ("all", "new_to_user", "cold_items")
KS: tuple[int, ...] = (10, 50, 100)
RESULTS_DIR = _REPO / "benchmarks" / "results"
ALL_DATASETS: tuple[str, ...] = ("demo", *DATASET_NAMES)


def load(name: str, root: Path) -> Dataset:
    if name == "demo":
        from recs.data.demo import write_demo_shop
        from recs.data.load import load_dataset

        folder = _REPO / "build" / "bench" / "demo"
        write_demo_shop(folder, seed=0)
        return load_dataset(folder)[0]
    return load_dataset_by_name(name, root)


def model_dir(name: str) -> Path:
    """Where the towers trained for a dataset are kept (tune split: test baskets never seen)."""
    return _REPO / "build" / "bench" / "models" / name.replace("/", "-")


def _train_record(name: str) -> Path:
    return model_dir(name).parent / f"{model_dir(name).name}.train.json"


def run_dataset(name: str, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import numpy as np

    from recs.data.splits import leave_last_out
    from recs.evaluation.adapters import (
        CandidatesRecommender,
        TwoTowerRecommender,
        ZeroShotRecommender,
    )
    from recs.evaluation.protocol import evaluate
    from recs.evaluation.runner import evaluate_baselines
    from recs.retrieval.retriever import RetrievalConfig, Retriever
    from recs.retrieval.towers import TowerConfig
    from recs.retrieval.trainer import TrainConfig

    dataset = load(name, root)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    print(f"[{name}] {split.describe()}", flush=True)
    rows = [] if args.skip_baselines else evaluate_baselines(
        list(BASELINES), dataset.items, split, KS, tune=not args.no_tune, slices=SLICES, dataset=name
    )
    config = RetrievalConfig(
        towers=TowerConfig(model=args.model, user_input=args.user_input),
        train=TrainConfig(epochs=args.epochs, max_pairs_per_epoch=args.max_pairs, max_minutes=args.max_minutes),
    )

    def add(method: str, recommender: Any, notes: str) -> None:
        started = time.perf_counter()
        recommender.fit(split.fit_events, dataset.items)
        results = evaluate(recommender, split, dataset.items, ks=KS, slices=SLICES)
        took = time.perf_counter() - started
        for slice_name, metrics in results.items():
            rows.append({"dataset": name, "method": method, "slice": slice_name, "metrics": metrics,
                         "notes": f"{notes}; evaluated in {took:.0f}s"})
        print(f"[{name}] {method}: ndcg@10 {results['all']['ndcg@10']:.4f} recall@100 {results['all']['recall@100']:.4f}", flush=True)

    if not args.skip_zero_shot:
        add("zero_shot", ZeroShotRecommender(config=config), f"untuned {args.model}, user input {args.user_input}")
    work = _REPO / "build" / "bench" / f"work-{name.replace('/', '-')}"
    started = time.perf_counter()
    if args.reuse_towers and (model_dir(name) / "manifest.json").is_file():
        # Re-evaluate towers trained by an earlier run (same split, same tune events).
        retriever = Retriever.load(model_dir(name))
        train_s = float(json.loads(_train_record(name).read_text())["train_s"]) if _train_record(name).is_file() \
            else float(retriever.report.seconds if retriever.report else 0.0)
    else:
        retriever = Retriever.fit(split.tune_events, dataset.items, config, work, valid_targets=split.valid, show_progress=args.progress)
        train_s = time.perf_counter() - started
        retriever.save(model_dir(name))  # benchmarks/rerank.py starts from these towers
        atomic_write_text(_train_record(name), json.dumps({"train_s": train_s}))
    report = retriever.report
    texts = retriever.catalog.texts
    started = time.perf_counter()
    retriever.encode_texts(texts)
    items_per_s = len(texts) / max(time.perf_counter() - started, 1e-9)
    train_notes = (
        f"trained {report.steps if report else 0} steps ({report.epochs_run if report else 0} epochs, best "
        f"{report.best_epoch if report else 0}) on {report.pairs if report else 0} pairs in {train_s:.0f}s; "
        f"item encoding {items_per_s:.0f} items/s; user input {args.user_input}; model {args.model}"
    )
    add("two_tower", TwoTowerRecommender(retriever=retriever), train_notes)
    add("candidates", CandidatesRecommender(retriever=retriever), "RRF over two_tower, history, cooc, popularity; " + train_notes)
    for row in rows:
        if row["method"] == "two_tower" and row["slice"] == "all":
            row["metrics"] = {**row["metrics"], "train_s": round(train_s, 1), "steps": float(report.steps if report else 0),
                              "items_per_s": round(float(items_per_s), 1)}
    del np
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(ALL_DATASETS))
    parser.add_argument("--model", default="default", help="backbone folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-pairs", type=int, default=6000)
    parser.add_argument("--max-minutes", type=float, default=8.0, help="training time cap per dataset")
    parser.add_argument("--user-input", default="text+history", choices=["text", "text+history"])
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-zero-shot", action="store_true")
    parser.add_argument("--reuse-towers", action="store_true", help="evaluate the towers saved by an earlier run instead of training")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default=BENCHMARK, help="results file name")
    add_merge_flag(parser)
    args = parser.parse_args(argv)
    return run_all(args, run_dataset, ("recall@10", "recall@50", "recall@100", "ndcg@10"))

if __name__ == "__main__":
    raise SystemExit(main())
