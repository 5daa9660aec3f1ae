"""The ranking stage against the best baseline: learned ranker, cross-encoder at several R, latency.

    python benchmarks/rerank.py [--datasets demo,online_retail] [--rerank-top 20,50,100]

Same protocol and slices as benchmarks/retrieval.py. The towers come from
`build/bench/models/<dataset>` (written by benchmarks/retrieval.py, trained on the tune split) or
are trained here. The ranker and the cross-encoder (a residual on its logit) learn on each user's validation basket
(history before it), and everything is evaluated on the test baskets. Methods: the baselines,
`two_tower`, `ranker` (learned ranker alone), `ranker+cross_encoder` (slice `all@R=..`), `engine`
(the default pipeline: R chosen by `fit_ranking` on held-out users, or --default-r). Latency per query of each stage (p50/p95 ms) on this CPU.
`--ce-layers N`: the cross-encoder keeps the backbone's first N layers (`[ranking.cross_encoder]
layers`, default 4; 0: all), `--ce-max-tokens T` its pairs are cut to T tokens (`max_tokens`); with `--name` (say `rerank_ce2`) its rows go to their own file, to compare with the full depth's.
Slice `discover`: the `new_to_user` question asked of each method's "discover" shelf: its list
without the items the user bought (the engine's and ranker's `--novelty` shelf, the baselines'
lists with `exclude_bought`). A single list cannot lead both `all` (re-buys) and `new_to_user`;
a shop shows the two shelves, and each is measured against the same shelf of every baseline.
Writes benchmarks/results/rerank.json, .md and .png.
"""

from __future__ import annotations

import argparse
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

BASELINES: tuple[str, ...] = ("popularity", "repeat", "cooc", "als", "bm25", "tifu_knn", "upcf")
SLICES: tuple[str, ...] = ("all", "new_to_user")
KS: tuple[int, ...] = (10, 50)
RESULTS_DIR = _REPO / "benchmarks" / "results"


def latency_rows(name: str, pipeline: Any, users: list[str], rerank_top: int, n: int = 100) -> dict[str, float]:
    """Per-query latency of each stage, one query at a time, as a served request would run."""
    import numpy as np

    from recs.ranking.pipeline import RankOptions
    from recs.retrieval.filters import Filters

    r = pipeline.retriever
    stage: dict[str, list[float]] = {"user_tower": [], "candidates+ranker": [], "cross_encoder": [], "total": []}
    for user in users[:n]:
        started = time.perf_counter()
        context = r.context(user_id=user)
        vector = r.user_vectors([context.state])[0]
        tower_ms = (time.perf_counter() - started) * 1000
        ranked = pipeline.rank(context, vector, Filters(), 10, RankOptions(rerank_top=rerank_top, time_budget_ms=None))
        stage["user_tower"].append(tower_ms)
        stage["candidates+ranker"].append(ranked.timings_ms.get("ranker", 0.0))
        stage["cross_encoder"].append(ranked.timings_ms.get("cross_encoder", 0.0))
        stage["total"].append((time.perf_counter() - started) * 1000)
    out = {}
    for key, values in stage.items():
        out[f"{key}_p50_ms"] = float(np.percentile(values, 50))
        out[f"{key}_p95_ms"] = float(np.percentile(values, 95))
    out["p50_ms"], out["p95_ms"] = out["total_p50_ms"], out["total_p95_ms"]
    return out


def classifier_curves(name: str, pipeline: Any, split: Any, max_users: int, top: int, out_dir: Path,
                      results: str = "rerank") -> list[dict[str, Any]]:
    """The ranker and the cross-encoder as classifiers (relevant or not) of the test users'
    candidates: ROC and PR curves with AUCs, one PNG per dataset. The ranker is judged on all N
    candidates and on the first stage's top `top` (the set the cross-encoder sees), the
    cross-encoder and the served sum (ranker logit + CE score) on that top."""
    import numpy as np

    from recs.evaluation.curves import average_precision, plot_roc_pr, roc_auc
    from recs.ranking.pipeline import cross_encoder_texts, residual_scores, serving_order
    from recs.ranking.training import query_examples, serving_view

    canonical = split.fit_events.drop([c for c in split.fit_events.columns if c.startswith("_")])
    view = serving_view(pipeline.retriever, canonical)
    examples = query_examples(view, split.test, view.config.candidates.n_two_tower, max_users, seed=0)
    collected: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def keep(key: str, labels: np.ndarray, scores: np.ndarray) -> None:
        collected.setdefault(key, ([], []))
        collected[key][0].append(labels)
        collected[key][1].append(scores)

    for example in examples:
        first = pipeline.ranker.predict(example.features)
        keep("ranker (all candidates)", example.labels, first)
        order = serving_order(example.candidates, first)[:top]
        keep(f"ranker (top {top})", example.labels[order], first[order])
        if pipeline.cross_encoder is not None:
            texts = cross_encoder_texts(view, example.candidates, example.features, order)
            ce = pipeline.cross_encoder.score(example.context.state.text, texts)
            keep(f"cross_encoder (top {top})", example.labels[order], ce)
            keep(f"ranker+cross_encoder (top {top})", example.labels[order], residual_scores(first[order], ce))
    curves = {key: (np.concatenate(ls), np.concatenate(ss)) for key, (ls, ss) in collected.items()}
    if not curves:
        return []
    path = plot_roc_pr(curves, out_dir / f"{results}_curves_{name.replace('/', '-')}.png",  # --name's own file
                       f"{name}: candidates of {len(examples)} test users as classifiers")
    rows = []
    for key, (labels, scores) in curves.items():
        method = key.split(" (")[0]
        metrics = {"roc_auc": roc_auc(labels, scores), "average_precision": average_precision(labels, scores),
                   "pairs": float(len(labels)), "positives": float(labels.sum())}
        rows.append({"dataset": name, "method": method, "slice": "classifier@" + ("all" if "all" in key else f"top{top}"),
                     "metrics": metrics, "notes": f"{len(examples)} test users; curves in {path.name}"})
        print(f"[{name}] {key}: ROC AUC {metrics['roc_auc']:.3f}, AP {metrics['average_precision']:.3f}", flush=True)
    return rows


def run_dataset(name: str, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from recs.config import RecsConfig
    from recs.evaluation.adapters import EngineRecommender, RankerRecommender, TwoTowerRecommender
    from recs.evaluation.protocol import DISCOVER_SLICE, evaluate
    from recs.evaluation.runner import evaluate_baselines
    from recs.evaluation.stages import fit_stages, method_rows, split_for_benchmark
    from recs.ranking.cross_encoder import CrossEncoderConfig
    from recs.ranking.fit import RankingConfig
    from recs.retrieval.config import RetrievalConfig, TrainConfig
    from recs.retrieval.retriever import Retriever
    from recs.retrieval.towers import TowerConfig

    dataset = load(name, root)
    # The cross-encoder at R=100 costs ~100 pair encodings per user: a seeded sample of test users
    # keeps the run inside CI-like time; every method is scored on the same users.
    split = split_for_benchmark(dataset, args.max_test_users)
    print(f"[{name}] {split.describe()}", flush=True)
    rows = evaluate_baselines(list(BASELINES), dataset.items, split, KS, tune=not args.no_tune, slices=SLICES, dataset=name,
                              discover=True)
    best = max((r for r in rows if r["slice"] == "all"), key=lambda r: r["metrics"]["ndcg@10"])
    print(f"[{name}] best baseline {best['method']}: ndcg@10 {best['metrics']['ndcg@10']:.4f}", flush=True)
    folder = model_dir(name)
    config = RecsConfig(
        retrieval=RetrievalConfig(towers=TowerConfig(model=args.model),
                                  train=TrainConfig(epochs=args.epochs, max_minutes=args.max_minutes)),
        ranking=RankingConfig(train_cross_encoder=not args.no_cross_encoder,
                              cross_encoder=CrossEncoderConfig(epochs=args.ce_epochs, max_minutes=args.ce_max_minutes,
                                                               max_queries=args.ce_max_queries,
                                                               **({"layers": args.ce_layers or None} if args.ce_layers is not None else {}),
                                                               **({"max_tokens": args.ce_max_tokens} if args.ce_max_tokens else {}),
                                                               **({"patience": args.ce_patience} if args.ce_patience else {}))),
    )
    # Towers trained on the tune split by benchmarks/retrieval.py (or an earlier run) are reused.
    saved = Retriever.load(folder) if (folder / "manifest.json").is_file() else None
    stages = fit_stages(split, dataset.items, config, _REPO / "build" / "bench" / f"work-{folder.name}",
                        show_progress=args.progress, retriever=saved)
    if saved is None:
        stages.retriever.save(folder)
    retriever, models, pipeline = stages.retriever, stages.models, stages.pipeline
    notes = stages.notes()
    if args.ce_layers is not None and models.cross_encoder is not None:  # which depth these rows measured
        notes += f"; cross-encoder of the backbone's first {args.ce_layers} layers" if args.ce_layers else "; cross-encoder of all the backbone's layers"
    if args.ce_max_tokens is not None and models.cross_encoder is not None:
        notes += f"; cross-encoder pairs of {args.ce_max_tokens} tokens"
    if args.ce_patience is not None and models.cross_encoder is not None:
        notes += f"; cross-encoder patience {args.ce_patience}"

    def add(method: str, recommender: Any, slice_suffix: str = "", extra: dict[str, float] | None = None,
            discover: Any = None) -> None:
        added = method_rows(name, method, recommender, split, dataset.items, KS, SLICES, notes, discover=discover,
                            slice_suffix=slice_suffix, extra=extra)
        rows.extend(added)
        shown = ", ".join(f"{r['slice']} {r['metrics']['ndcg@10']:.4f}" for r in added if not r["slice"].startswith("cold_items"))
        print(f"[{name}] {method}{slice_suffix}: ndcg@10 {shown}", flush=True)

    add("two_tower", TwoTowerRecommender(retriever=retriever), discover=TwoTowerRecommender(retriever=retriever))
    test_users = split.test["user_id"].unique().sort().to_list()
    if models.ranker is not None:
        add("ranker", RankerRecommender(pipeline), extra=latency_rows(name, pipeline, test_users, 0, args.latency_queries),
            discover=RankerRecommender(pipeline, novelty=True))
    if models.cross_encoder is not None:
        for r in args.rerank_top:
            lat = latency_rows(name, pipeline, test_users, r, args.latency_queries)
            add("ranker+cross_encoder", EngineRecommender(pipeline, rerank_top=r), f"@R={r}", lat)
    decision = models.report.get("rerank_decision") or {}
    default_r = args.default_r if args.default_r is not None else stages.default_rerank_top
    print(f"[{name}] default R {default_r} (held-out choice: {decision})", flush=True)
    from recs.evaluation.paired import format_paired

    for key, value in decision.items():  # group C: paired NDCG@10 deltas over the ranker, by R
        if key.startswith("delta_"):
            kind, r = key.split("_")[1:]
            print(f"[{name}] held-out {kind}: " + format_paired(f"ranker+cross_encoder@R={r}", "ranker", value), flush=True)
    same = [r for r in rows if r["dataset"] == name and r["method"] == "ranker+cross_encoder" and r["slice"].endswith(f"@R={default_r}")]
    if default_r > 0 and same:  # already scored at this R: the same pipeline, named `engine`
        rows.extend({**r, "method": "engine", "slice": r["slice"].rsplit("@", 1)[0], "notes": r["notes"] + f"; default R = {default_r}"}
                    for r in same)
        shelf = EngineRecommender(pipeline, rerank_top=default_r, novelty=True).fit(split.fit_events, dataset.items)
        metrics = evaluate(shelf, split, dataset.items, ks=KS, slices=("new_to_user",), exclude_bought=True)["new_to_user"]
        rows.append({"dataset": name, "method": "engine", "slice": DISCOVER_SLICE, "metrics": metrics,
                     "notes": f"{notes}; default R = {default_r}; discover shelf (--novelty)"})
    elif default_r > 0 and models.cross_encoder is not None:
        add("engine", EngineRecommender(pipeline, rerank_top=default_r), extra=latency_rows(name, pipeline, test_users, default_r, args.latency_queries),
            discover=EngineRecommender(pipeline, rerank_top=default_r, novelty=True))
    else:  # R = 0: the engine's default order is the learned ranker's; same rows, named `engine`
        rows.extend({**r, "method": "engine", "notes": r["notes"] + "; default R = 0 (held-out users: reranking did not add NDCG@10)"}
                    for r in list(rows) if r["method"] == "ranker" and r["dataset"] == name)
    if models.ranker is not None and args.curve_users > 0:
        rows.extend(classifier_curves(name, pipeline, split, args.curve_users, args.curve_top, args.out, args.name))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="demo,online_retail,amazon_bundles/electronic,amazon_bundles/clothing,amazon_bundles/food")
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=8.0)
    parser.add_argument("--rerank-top", type=lambda s: [int(x) for x in s.split(",")], default=[20, 50, 100])
    parser.add_argument("--default-r", type=int, default=None, help="R of `engine` (default: the R chosen on held-out users)")
    parser.add_argument("--ce-epochs", type=int, default=2)
    parser.add_argument("--ce-max-minutes", type=float, default=6.0)
    parser.add_argument("--ce-max-queries", type=int, default=800)
    parser.add_argument("--ce-layers", type=int, default=None,
                        help="cross-encoder of the backbone's first N layers ([ranking.cross_encoder] layers; default: the config's, 4; 0: all)")
    parser.add_argument("--ce-patience", type=int, default=None,
                        help="cross-encoder epochs without a validation gain before it stops ([ranking.cross_encoder] patience)")
    parser.add_argument("--ce-max-tokens", type=int, default=None,
                        help="cross-encoder pair length ([ranking.cross_encoder] max_tokens; default: the config's)")
    parser.add_argument("--latency-queries", type=int, default=60)
    parser.add_argument("--max-test-users", type=int, default=600)
    parser.add_argument("--curve-users", type=int, default=200, help="test users for the ROC/PR curves (0: none)")
    parser.add_argument("--curve-top", type=int, default=50)
    parser.add_argument("--no-cross-encoder", action="store_true", help="learned ranker only (cheap: use with all test users)")
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="rerank")
    add_merge_flag(parser)
    args = parser.parse_args(argv)
    return run_all(args, run_dataset, ("recall@10", "ndcg@10", "p50_ms", "p95_ms"))

if __name__ == "__main__":
    raise SystemExit(main())
