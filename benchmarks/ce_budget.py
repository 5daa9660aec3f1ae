"""Does the cross-encoder keep its time budget? Requests with reranking on, serially and from
concurrent threads, against a model's own artifact.

    python benchmarks/ce_budget.py --model ART [--budgets 30,250] [--threads 1,8] [--requests 200] [--rerank-top 30]

For each (budget, threads): `--requests` `Engine.recommend(user, k=10, rerank_top=R,
time_budget_ms=B)` calls over users of the artifact, spread over the threads (one shared Engine,
as a service would hold it). Reported per row: `p50_ms`, `p99_ms`, `max_ms` (wall time of one
call), `over_budget` (share of answers slower than the budget), `over_budget_not_degraded` (share
slower than the budget AND not flagged `degraded`: the failure this checks; target 0),
`degraded` (share flagged), `over_ms_p99` (p99 of how far past the budget an answer came).
Rows: dataset = the artifact's folder name, method `ce_budget_<B>ms`, slice `threads_<T>`.
Writes benchmarks/results/ce_budget.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(_REPO))


def _users(engine: Any, n: int) -> list[str]:
    users = engine.retriever.events["user_id"].unique(maintain_order=True).to_list()
    return [str(u) for u in users[: max(1, n)]]


def measure(engine: Any, users: list[str], budget_ms: float, threads: int, requests: int, rerank_top: int) -> dict[str, float]:
    def one(i: int) -> tuple[float, bool]:
        started = time.perf_counter()
        result = engine.recommend(user_id=users[i % len(users)], k=10, rerank=True, rerank_top=rerank_top,
                                  time_budget_ms=budget_ms)
        return (time.perf_counter() - started) * 1000, bool(result.degraded)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        answers = list(pool.map(one, range(requests)))
    ms = np.array([a[0] for a in answers])
    degraded = np.array([a[1] for a in answers])
    over = ms > budget_ms
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "over_budget": round(float(over.mean()), 4),
        "over_budget_not_degraded": round(float((over & ~degraded).mean()), 4),
        "degraded": round(float(degraded.mean()), 4),
        "over_ms_p99": round(float(np.percentile(np.maximum(ms - budget_ms, 0.0), 99)), 1),
        "requests": float(requests),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="artifact with a cross-encoder (torch or ONNX)")
    parser.add_argument("--budgets", default="30,250", help="time budgets in ms, comma-separated")
    parser.add_argument("--threads", default="1,8", help="concurrent threads, comma-separated")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rerank-top", type=int, default=30)
    parser.add_argument("--users", type=int, default=100, help="distinct users cycled through")
    parser.add_argument("--out", type=Path, default=_REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from recs.evaluation.report import format_table, write_results
    from recs.serving import Engine

    engine = Engine.load(args.model)
    if engine.pipeline.cross_encoder is None:
        print(f"{args.model}: no cross-encoder to time", file=sys.stderr)
        return 1
    users = _users(engine, args.users)
    for user in users[:5]:  # warm-up: sessions, caches, the per-pair cost estimate
        engine.recommend(user_id=user, k=10, rerank=True, rerank_top=args.rerank_top, time_budget_ms=None)
    rows = []
    for budget in [float(b) for b in args.budgets.split(",") if b.strip()]:
        for threads in [int(t) for t in args.threads.split(",") if t.strip()]:
            metrics = measure(engine, users, budget, threads, args.requests, args.rerank_top)
            rows.append({"dataset": args.model.name, "method": f"ce_budget_{budget:g}ms", "slice": f"threads_{threads}",
                         "metrics": metrics,
                         "notes": f"Engine.recommend k=10, rerank_top={args.rerank_top}, {args.requests} requests over "
                                  f"{len(users)} users, {threads} thread(s) sharing one Engine"})
            print(rows[-1]["method"], rows[-1]["slice"], metrics, flush=True)
    columns = ("p50_ms", "p99_ms", "max_ms", "over_budget", "over_budget_not_degraded", "degraded")
    print(format_table(rows, metrics=columns))
    json_path, md_path = write_results("ce_budget", rows, args.out)
    print(f"wrote {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
