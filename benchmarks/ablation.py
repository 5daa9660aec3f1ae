"""Every part of the engine earns its place: the engine without each part in turn, beside the
next-basket baselines, with paired 95% confidence intervals.

    python benchmarks/ablation.py [--datasets demo,online_retail] [--cross-encoder]

Protocol as benchmarks/rerank.py (`leave_last_out`, full ranking, every test user): the towers
come from `build/bench/models/<dataset>` (trained on the tune split by benchmarks/retrieval.py or
rerank.py) or are trained here; each variant's ranking stage learns on the validation baskets and
is evaluated on the test baskets. Parts (PARTS): the two-tower source and its features, ALS,
co-purchase, the TIFU-KNN neighbours, the buy-again features, the text features, the cross-encoder.
Rows: `engine`, `engine-<part>` and the baselines, slices `all` and `discover` (the --novelty shelf
against new-to-user items); each `engine-<part>` row carries the paired per-user difference of
NDCG@10 against `engine` (`delta_vs_engine`, `ci_low`, `ci_high`), and the engine's `all` row its
ratio and paired difference against the best baseline on that slice (`ratio_vs_best`, ...).
Writes benchmarks/results/ablation.json, .md, ablation.png (NDCG@10 per method) and
ablation_deltas.png (each part's paired change with its interval).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks._runner import add_merge_flag, run_all  # noqa: E402
from benchmarks.retrieval import load, model_dir  # noqa: E402

BASELINES: tuple[str, ...] = ("repeat", "tifu_knn", "upcf", "als")
KS: tuple[int, ...] = (10,)
RESULTS_DIR = _REPO / "benchmarks" / "results"
BUY_AGAIN = ("times_bought", "days_since_bought", "rebuy_interval_days", "rebuy_due", "baskets_since_bought",
             "recent_buys", "basket_share", "item_rebuy_rate", "times_interacted", "days_since_interacted",
             "carted_before", "user_rebuy_share")
TEXT = ("two_tower_score", "two_tower_rank", "history_max_cosine", "history_mean_cosine")
# part -> (candidate config changes, ranker features held out)
PARTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "two_tower": ({"n_two_tower": 0}, ("two_tower_score", "two_tower_rank", "from_two_tower")),
    "als": ({"n_als": 0, "als_factors": 0}, ("als_score", "from_als")),
    "cooc": ({"n_cooc": 0}, ("cooc_score", "from_cooc")),
    "knn": ({"n_knn": 0}, ("tifu_own", "tifu_neighbours", "tifu_score", "from_knn")),
    "buy_again": ({}, BUY_AGAIN),
    "text": ({}, TEXT),
    "cross_encoder": ({}, ()),
}


def _cached_user_towers(towers: Any) -> Any:
    """The torch towers with the user tower memoised: every variant encodes the same users, and on
    a CPU the user tower is most of a variant's time. Still a TorchTowers (the cross-encoder
    starts from its item backbone)."""
    import numpy as np

    from recs.retrieval.encode import TorchTowers

    class CachedTowers(TorchTowers):
        def __init__(self) -> None:
            super().__init__(towers.model, towers.tokenizer)
            self._cache: dict[tuple[str, bytes], np.ndarray] = {}

        def encode_users(self, texts: list[str], history_means: np.ndarray) -> np.ndarray:
            keys = [(t, m.tobytes()) for t, m in zip(texts, history_means, strict=True)]
            missing = [j for j, key in enumerate(keys) if key not in self._cache]
            if missing:
                vectors = super().encode_users([texts[j] for j in missing], history_means[missing])
                for j, vector in zip(missing, vectors, strict=True):
                    self._cache[keys[j]] = vector
            if not keys:
                return super().encode_users(texts, history_means)
            return np.stack([self._cache[key] for key in keys])

    return CachedTowers()


def _retriever(name: str, dataset: Any, split: Any, args: argparse.Namespace) -> Any:
    from recs.retrieval.config import RetrievalConfig, TowerConfig, TrainConfig
    from recs.retrieval.retriever import Retriever

    folder = model_dir(name)
    if args.zero_shot:
        return Retriever.zero_shot(split.tune_events, dataset.items, RetrievalConfig(towers=TowerConfig(model=args.model)))
    if (folder / "manifest.json").is_file():
        return Retriever.load(folder)
    config = RetrievalConfig(towers=TowerConfig(model=args.model), train=TrainConfig(epochs=args.epochs, max_minutes=args.max_minutes))
    retriever = Retriever.fit(split.tune_events, dataset.items, config, folder.parent / f"work-{folder.name}",
                              valid_targets=split.valid, show_progress=args.progress)
    retriever.save(folder)
    return retriever


def _variant(retriever: Any, part: str | None) -> tuple[Any, tuple[str, ...]]:
    """A shallow copy of the retriever with the part's sources off, and the features held out."""
    changes, ignored = PARTS[part] if part else ({}, ())
    view = copy.copy(retriever)
    view.config = retriever.config.model_copy(
        update={"candidates": retriever.config.candidates.model_copy(update={**changes, "tune_als": False})})
    return view, ignored


def run_dataset(name: str, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import dataclasses

    import polars as pl

    from recs.data.splits import leave_last_out
    from recs.evaluation.adapters import EngineRecommender
    from recs.evaluation.paired import format_paired, paired_difference
    from recs.evaluation.protocol import DISCOVER_SLICE, evaluate
    from recs.evaluation.runner import evaluate_baselines
    from recs.ranking.config import CrossEncoderConfig, RankerConfig, RankingConfig
    from recs.ranking.fit import fit_ranking
    from recs.ranking.pipeline import RankingPipeline

    dataset = load(name, root)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    if args.max_test_users and split.test["user_id"].n_unique() > args.max_test_users:
        sample = split.test["user_id"].unique().sort().sample(args.max_test_users, seed=0).implode()
        split = dataclasses.replace(split, test=split.test.filter(pl.col("user_id").is_in(sample)))
    print(f"[{name}] {split.describe()}", flush=True)
    per_user: dict[tuple[str, str], dict[str, float]] = {}
    rows = evaluate_baselines(list(args.baselines), dataset.items, split, KS, slices=("all",), dataset=name,
                              discover=True, per_user=per_user)
    for r in rows:
        print(f"[{name}] {r['method']} {r['slice']}: ndcg@10 {r['metrics']['ndcg@10']:.4f}", flush=True)
    retriever = _retriever(name, dataset, split, args)
    retriever.towers = _cached_user_towers(retriever.torch_towers())
    full_models: Any = None

    def run(method: str, part: str | None) -> None:
        nonlocal full_models
        started = time.perf_counter()
        view, ignored = _variant(retriever, part if part != "cross_encoder" else None)
        if part == "cross_encoder":
            models = full_models  # the same engine, served without reranking
            rerank_top = 0
        else:
            ranking = RankingConfig(
                ranker=RankerConfig(ignored_features=ignored, max_users=args.max_train_users),
                discover=RankerConfig(objective="binary", ignored_features=ignored, max_users=args.max_train_users),
                train_cross_encoder=args.cross_encoder and part is None,
                cross_encoder=CrossEncoderConfig(max_minutes=args.ce_max_minutes),
            )
            models = fit_ranking(view, split.tune_events, split.valid, ranking,
                                 _REPO / "build" / "bench" / f"ablation-work-{name.replace('/', '-')}", show_progress=args.progress)
            rerank_top = int((models.report.get("rerank_decision") or {}).get("default_rerank_top", 0))
            if part is None:
                full_models = models
        pipeline = RankingPipeline(view, models.ranker, models.cross_encoder, models.discover)
        results: dict[str, dict[str, float]] = {}
        for shelf, slice_name, novelty in (("all", "all", False), (DISCOVER_SLICE, "new_to_user", True)):
            users: dict[str, dict[str, float]] = {}
            recommender = EngineRecommender(pipeline, rerank_top=rerank_top, novelty=novelty).fit(split.fit_events, dataset.items)
            results[shelf] = evaluate(recommender, split, dataset.items, ks=KS, slices=(slice_name,),
                                      exclude_bought=novelty, per_user=users)[slice_name]
            per_user[(method, shelf)] = users[slice_name]
        took = time.perf_counter() - started
        for shelf, metrics in results.items():
            extra: dict[str, float] = {}
            if part is not None:
                paired = paired_difference(per_user[(method, shelf)], per_user[("engine", shelf)])
                extra = {"delta_vs_engine": paired["delta"], "ci_low": paired["ci_low"], "ci_high": paired["ci_high"]}
                print(f"[{name}] {shelf}: " + format_paired(method, "engine", paired), flush=True)
            rows.append({"dataset": name, "method": method, "slice": shelf, "metrics": {**metrics, **extra},
                         "notes": f"default R {rerank_top}; held out: {', '.join(ignored) or 'nothing'}; {took:.0f}s"})
        print(f"[{name}] {method}: ndcg@10 all {results['all']['ndcg@10']:.4f}, discover "
              f"{results[DISCOVER_SLICE]['ndcg@10']:.4f} ({took:.0f}s)", flush=True)

    run("engine", None)
    for shelf in ("all", DISCOVER_SLICE):
        candidates = [r for r in rows if r["slice"] == shelf and r["method"] in args.baselines]
        if not candidates:
            continue
        best = max(candidates, key=lambda r: r["metrics"]["ndcg@10"])["method"]
        paired = paired_difference(per_user[("engine", shelf)], per_user[(best, shelf)])
        print(f"[{name}] {shelf}: " + format_paired("engine", best, paired), flush=True)
        engine_row = next(r for r in rows if r["method"] == "engine" and r["slice"] == shelf)
        engine_row["metrics"].update({"ratio_vs_best": paired["ratio"], "delta_vs_best": paired["delta"],
                                      "ci_low": paired["ci_low"], "ci_high": paired["ci_high"]})
        engine_row["notes"] += f"; best baseline {best}"
    for part in args.parts:
        run(f"engine-{part}", part)
    return rows


def plot_ablation(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Paired NDCG@10 change of each `engine-<part>` against `engine`, with its 95% interval."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(dict.fromkeys((r["dataset"], r["slice"]) for r in rows if "delta_vs_engine" in r["metrics"]))
    figure = Figure(figsize=(5.0 * max(1, len(panels)), 4.0))
    FigureCanvasAgg(figure)
    for j, (dataset, shelf) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, len(panels), j)
        mine = [r for r in rows if r["dataset"] == dataset and r["slice"] == shelf and "delta_vs_engine" in r["metrics"]]
        labels = [r["method"].removeprefix("engine-") for r in mine]
        deltas = [r["metrics"]["delta_vs_engine"] for r in mine]
        errors = [[d - r["metrics"]["ci_low"] for d, r in zip(deltas, mine, strict=True)],
                  [r["metrics"]["ci_high"] - d for d, r in zip(deltas, mine, strict=True)]]
        ax.barh(labels, deltas, xerr=errors, color=["#c44" if d < 0 else "#4a4" for d in deltas], capsize=3)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{dataset} / {shelf}")
        ax.set_xlabel("NDCG@10 without the part - engine (95% CI)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="demo,online_retail")
    parser.add_argument("--parts", type=lambda s: [p for p in s.split(",") if p], default=list(PARTS))
    parser.add_argument("--baselines", type=lambda s: [p for p in s.split(",") if p], default=list(BASELINES))
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=8.0)
    parser.add_argument("--zero-shot", action="store_true", help="untrained towers (quick checks of the ranking stage)")
    parser.add_argument("--cross-encoder", action="store_true", help="train the cross-encoder for the full engine")
    parser.add_argument("--ce-max-minutes", type=float, default=6.0)
    parser.add_argument("--max-test-users", type=int, default=0, help="0: every test user")
    parser.add_argument("--max-train-users", type=int, default=20000, help="validation baskets the rankers learn from")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="ablation")
    add_merge_flag(parser)
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)} (known: {', '.join(PARTS)})")
    status = run_all(args, run_dataset, ("ndcg@10", "delta_vs_engine", "ci_low", "ci_high", "ratio_vs_best"))
    import json

    document = json.loads((args.out / f"{args.name}.json").read_text(encoding="utf-8"))
    if any("delta_vs_engine" in r["metrics"] for r in document["rows"]):
        print(f"wrote {plot_ablation(document['rows'], args.out / f'{args.name}_deltas.png')}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
