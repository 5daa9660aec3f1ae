"""Request latency per stage against catalog size: `Engine.recommend(user_id, k=10)` one request at a
time, ONNX int8, no cross-encoder, `--threads` onnxruntime/BLAS threads.

    python benchmarks/latency.py [--scales 1,12.5,125] [--requests 300] [--threads 2]
                                 [--minilm-max-items 2000] [--work build/latency] [--ort-spin]

For each `recs data demo --scale S` shop (800 items per unit of scale): zero-shot towers (the
backbone untrained: latency does not depend on what the towers learned), statistics fitted from
the shop's log, a learned ranker (trained once on the first shop, reused: same features), `recs
export --int8`, then `--requests` users drawn at random, each served once. Catalogs above
`--minilm-max-items` items are encoded with a tiny random BERT item tower (encoding a 100k-item
catalog with MiniLM takes hours on 2 cores); the user tower is catalog-independent, so its stage
is measured with MiniLM on the first shop (row `user_tower_minilm`).

Stages, each timed around its own call: `user_state` (the user's context from the per-user
arrays, first access), `user_tower` (history mean + user tower), `candidates` (FAISS search and
every source, scores on candidates only), `features_ranker` (feature matrix + LightGBM), and
`total` (the whole `Engine.recommend` of the same user, timed separately), and `first_request`
(the whole `Engine.recommend` of the user's first request, before the stages: the cold one, with
nothing of theirs cached; the stages and `total` are the second and third). Rows: dataset
`demo-<items>`, method `recs`, slice = stage, metrics `p50_ms`, `p95_ms`, `p99_ms`, `items`.
Writes benchmarks/results/latency.json, .md and .png (p99 per stage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script: `python benchmarks/latency.py`
    sys.path.insert(0, str(_REPO))

STAGES = ("user_state", "user_tower", "candidates", "features_ranker", "total")


def _threads(n: int) -> None:
    # Before numpy loads: BLAS pools are sized once.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(n))


def build(scale: float, work: Path, tower_model: str, rankers: Any | None) -> tuple[Path, Any]:
    """The ONNX int8 folder of a zero-shot engine on the demo shop at `scale`, and its rankers."""
    from recs.data import leave_last_out, load_dataset
    from recs.data.demo import write_demo_shop
    from recs.export.artifact import export_artifact
    from recs.ranking.artifact import save_ranking
    from recs.ranking.config import RankingConfig
    from recs.ranking.fit import fit_ranking
    from recs.ranking.pipeline import RankingPipeline, RankOptions
    from recs.retrieval.config import RetrievalConfig
    from recs.retrieval.retriever import Retriever

    folder = work / f"scale-{scale:g}"
    if (folder / "onnx" / "manifest.json").is_file():  # built by an earlier run
        if rankers is None:
            from recs.serving.engine import Engine

            pipeline = Engine.load(folder / "torch").pipeline
            rankers = (pipeline.ranker, pipeline.discover)
        return folder / "onnx", rankers
    write_demo_shop(folder / "shop", seed=0, scale=scale)
    dataset, _ = load_dataset(folder / "shop")
    config = RetrievalConfig.model_validate({"towers": {"model": tower_model}})
    retriever = Retriever.zero_shot(dataset.events, dataset.items, config)
    if rankers is None:
        split = leave_last_out(dataset.events, dataset.items["item_id"])
        models = fit_ranking(retriever, split.fit_events, split.test, RankingConfig(train_cross_encoder=False),
                             folder / "rank-work", show_progress=False)
        rankers = (models.ranker, models.discover)
    retriever.save(folder / "torch")
    save_ranking(folder / "torch", RankingPipeline(retriever, rankers[0], None, rankers[1]), RankOptions(rerank=False))
    export_artifact(folder / "torch", folder / "onnx", int8=True, check=False)
    return folder / "onnx", rankers


def measure(model: Path, requests: int, threads: int, seed: int = 0, spinning: bool = False) -> tuple[dict[str, list[float]], int, str]:
    """Per-stage milliseconds over `requests` random known users (one request each), the
    catalog size and the FAISS index kind; `spinning`: onnxruntime's threads spin-wait
    (`RECS_ORT_SPIN=1`; off by default, as in serving)."""
    import numpy as np

    from recs.ranking.features import feature_matrix
    from recs.retrieval.filters import Filters
    from recs.serving.engine import Engine
    from recs.serving.onnx_runtime import RuntimeOptions

    engine = Engine.load(model, RuntimeOptions(precision="int8", threads=threads, providers=["CPUExecutionProvider"], spinning=spinning))
    r, pipeline = engine.retriever, engine.pipeline
    users = r.users.user_ids()
    rng = np.random.default_rng(seed)
    picked = [users[i] for i in rng.choice(len(users), size=min(requests + 20, len(users)), replace=False)]
    for user in picked[:20]:  # warm-up: sessions, caches of the filters and indexes
        engine.recommend(user_id=user, k=10, rerank=False)
    times: dict[str, list[float]] = {s: [] for s in (*STAGES, "first_request")}
    for user in picked[20:]:
        # The user's first request, whole: nothing of theirs is cached yet (the per-user state,
        # the pages of the index and factors their neighbours live on).
        t_first = time.perf_counter()
        engine.recommend(user_id=user, k=10, rerank=False)
        times["first_request"].append((time.perf_counter() - t_first) * 1000.0)
        r.users._derived.pop(user, None)  # the stages below start from the per-user arrays again
        t0 = time.perf_counter()
        context = r.context(user_id=user)
        t1 = time.perf_counter()
        vector = r.user_vectors([context.state])[0]
        t2 = time.perf_counter()
        cands = r.candidates(context, vector, Filters())
        t3 = time.perf_counter()
        features = feature_matrix(r, context, cands)
        if pipeline.ranker is not None:
            pipeline.ranker.predict(features)
        t4 = time.perf_counter()
        engine.recommend(user_id=user, k=10, rerank=False)
        t5 = time.perf_counter()
        for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)), strict=True):
            times[stage].append((b - a) * 1000.0)
    return times, len(r.catalog), r.index.kind


def _row(dataset: str, stage: str, values: list[float], items: int) -> dict[str, Any]:
    import numpy as np

    p50, p95, p99 = (float(np.percentile(values, q)) for q in (50, 95, 99))
    return {"dataset": dataset, "method": "recs", "slice": stage,
            "metrics": {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "items": int(items)}}


def main(argv: list[str] | None = None) -> int:
    from benchmarks._runner import add_merge_flag

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,12.5,125", help="demo shop scales (800 items per unit)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="the towers' backbone")
    parser.add_argument("--minilm-max-items", type=int, default=2000,
                        help="larger catalogs are encoded with a tiny random BERT")
    parser.add_argument("--ort-spin", action="store_true", help="onnxruntime threads spin-wait (RECS_ORT_SPIN=1; serving's default is off)")
    parser.add_argument("--work", type=Path, default=_REPO / "build" / "latency")
    parser.add_argument("--out", type=Path, default=_REPO / "benchmarks" / "results")
    add_merge_flag(parser)
    args = parser.parse_args(argv)
    _threads(args.threads)

    from recs.encoders import build_tiny_bert
    from recs.evaluation.report import format_table, plot_metrics, write_results

    args.work.mkdir(parents=True, exist_ok=True)
    tiny = args.work / "tiny-bert"
    if not (tiny / "config.json").is_file():
        build_tiny_bert(tiny, hidden=32, layers=2)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    kept: list[dict[str, Any]] = []
    if args.merge and (args.out / "latency.json").is_file():
        document = json.loads((args.out / "latency.json").read_text(encoding="utf-8"))
        kept, notes = document.get("rows", []), [n for n in document.get("notes", []) if n.startswith("demo-")]
    rankers = None
    for scale in (float(s) for s in args.scales.split(",") if s.strip()):
        model = args.model if 800 * scale <= args.minilm_max_items else str(tiny)
        onnx, rankers = build(scale, args.work, model, rankers)
        times, items, kind = measure(onnx, args.requests, args.threads, spinning=args.ort_spin)
        dataset = f"demo-{items}"
        kept = [r for r in kept if r["dataset"] != dataset]
        notes = [n for n in notes if not n.startswith(f"{dataset}:")]
        rows.extend(_row(dataset, stage, times[stage], items) for stage in (*STAGES, "first_request"))
        print(f"[{dataset}] " + ", ".join(f"{r['slice']} p99 {r['metrics']['p99_ms']:.1f} ms" for r in rows[-len(STAGES) - 1:]), flush=True)
        if model == args.model and not any(r["slice"] == "user_tower_minilm" for r in rows):
            rows.append(_row(dataset, "user_tower_minilm", times["user_tower"], items))
        towers = f"MiniLM ({args.model})" if model == args.model else "tiny random BERT"
        notes.append(f"{dataset}: towers {towers}, {kind} index")
        write_results("latency", [*kept, *rows], args.out, sections={"Notes": notes}, extra={"notes": notes})
    rows = [*kept, *rows]
    print(format_table(rows, metrics=("p50_ms", "p95_ms", "p99_ms")))
    notes = [n for n in notes if n.startswith("demo-")] + [
        f"{args.requests} requests per catalog, one at a time, {args.threads} threads{' spin-waiting' if args.ort_spin else ''}, ONNX int8, no cross-encoder",
        "user_tower_minilm: the MiniLM user tower's stage (catalog-independent), for catalogs encoded with the tiny BERT",
        "first_request: each user's first request, whole (nothing of theirs cached); the stages and total: the same user again",
    ]
    json_path, _ = write_results("latency", rows, args.out, sections={"Notes": notes}, extra={"notes": notes})
    plot_metrics(rows, args.out / "latency.png", metric="p99_ms")
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
