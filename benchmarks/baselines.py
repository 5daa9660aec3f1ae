"""Every baseline on every available benchmark dataset, next-basket protocol.

    python benchmarks/baselines.py [--datasets online_retail,movielens_small] [--k 10,50] [--no-tune]

For each dataset found under the datasets root (`../shared/datasets`, or `$RECS_DATASETS`): adapt it to
the data contract (benchmarks/datasets.py), split it with `leave_last_out` (each user's last purchase
basket is the test target, fitted on everything before it), run popularity, repeat, cooc, als, bm25,
tifu_knn and upcf (als, tifu_knn and upcf tuned on the validation baskets unless --no-tune),
and keep the slices `all` and `new_to_user`. Writes benchmarks/results/baselines.json + .md (the
DESIGN.md results format) and baselines.png, and prints the table. A dataset whose files are missing is
skipped with a message; one that fails is reported and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script: `python benchmarks/baselines.py`
    sys.path.insert(0, str(_REPO))

import polars as pl  # noqa: E402

from benchmarks.datasets import (  # noqa: E402
    AMAZON_DOMAINS,
    DATASET_NAMES,
    datasets_root,
    describe,
    load_dataset_by_name,
    missing_files,
)
from recs.data.splits import leave_last_out  # noqa: E402

BENCHMARK = "baselines"
METHODS: tuple[str, ...] = ("popularity", "repeat", "cooc", "als", "bm25", "tifu_knn", "upcf")
SLICES: tuple[str, ...] = ("all", "new_to_user")
DEFAULT_KS: tuple[int, ...] = (10, 50)
RESULTS_DIR = _REPO / "benchmarks" / "results"

# What a reader needs to know about each adapter's choices (see benchmarks/datasets.py).
ADAPTER_NOTES: dict[str, str] = {
    "online_retail": "baskets = invoices; customers known, no cancellations/returns/service lines",
    **{
        f"amazon_bundles/{d}": (
            "baskets = user-bundle interactions (user_bundle x bundle_item); a user's bundles mostly "
            "share one day timestamp, so few test users have any earlier history"
        )
        for d in AMAZON_DOMAINS
    },
    "movielens_small": "each rating is its own basket (next-item protocol)",
}


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--datasets",
        type=_csv,
        default=list(DATASET_NAMES),
        help=f"comma-separated names (default: all of {','.join(DATASET_NAMES)})",
    )
    p.add_argument(
        "--k", type=lambda s: [int(k) for k in _csv(s)], default=list(DEFAULT_KS), help="cut-offs"
    )
    p.add_argument("--methods", type=_csv, default=list(METHODS), help="baselines to run")
    p.add_argument("--slices", type=_csv, default=list(SLICES), help="slices to keep")
    p.add_argument("--no-tune", action="store_true", help="skip the validation search of als, tifu_knn and upcf")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="datasets root (default: $RECS_DATASETS or ../shared/datasets)",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = p.parse_args(argv)
    unknown = [d for d in args.datasets if d not in DATASET_NAMES]
    if unknown:
        p.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASET_NAMES)}")
    if not args.k or any(k < 1 for k in args.k):
        p.error("--k needs positive integers, e.g. 10,50")
    return args


def run_dataset(
    name: str,
    methods: Sequence[str],
    ks: Sequence[int],
    *,
    tune: bool = True,
    slices: Sequence[str] = SLICES,
    root: Path | None = None,
) -> list[dict[str, Any]]:
    """Load, split, run the baselines; rows with "dataset" and the protocol/sizes in "notes"."""
    from recs.evaluation.runner import evaluate_baselines

    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    dataset = load_dataset_by_name(name, root, report=report)
    sizes = describe(dataset)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    n_test = split.test["user_id"].n_unique()
    test_users = split.test["user_id"].unique().implode()
    with_history = split.fit_events.filter(pl.col("user_id").is_in(test_users))[
        "user_id"
    ].n_unique()
    cold_pairs = split.test.filter(pl.col("item_id").is_in(sorted(split.cold_items))).height
    t_load = time.perf_counter() - t0
    print(
        f"[{name}] {sizes['users']} users, {sizes['items']} items, {sizes['events']} events, "
        f"{sizes['baskets']} baskets; {split.describe()} ({t_load:.1f}s)",
        flush=True,
    )
    rows = evaluate_baselines(
        list(methods),
        dataset.items,
        split,
        list(ks),
        tune=tune,
        slices=list(slices),
        dataset=name,
    )
    elapsed = time.perf_counter() - t0
    dataset_notes = (
        f"{sizes['users']} users, {sizes['items']} items, {sizes['events']} events, "
        f"{sizes['baskets']} baskets; {n_test} test users ({with_history} with any history before "
        f"their test basket), {split.test.height} test (user, item) pairs ({cold_pairs} on cold "
        f"items); {ADAPTER_NOTES.get(name, '')}; {elapsed:.0f}s for all methods"
    )
    dropped = {k[len("dropped_") :]: v for k, v in report.items() if k.startswith("dropped_") and v}
    if dropped:
        dataset_notes += "; adapter dropped " + ", ".join(f"{v} ({k})" for k, v in dropped.items())
    out: list[dict[str, Any]] = []
    for row in rows:
        if row.get("slice") not in slices:
            continue
        extra = str(row.get("notes") or "").strip()
        out.append(
            {
                "dataset": name,
                "method": row["method"],
                "slice": row["slice"],
                "metrics": dict(row["metrics"]),
                "notes": f"{extra}; {dataset_notes}" if extra else dataset_notes,
            }
        )
    print(f"[{name}] done in {elapsed:.1f}s", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root if args.root is not None else datasets_root()
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    timings: dict[str, float] = {}
    for name in args.datasets:
        missing = missing_files(name, root)
        if missing:
            print(f"[{name}] skipped: missing {', '.join(str(m) for m in missing)}", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            rows.extend(
                run_dataset(
                    name,
                    args.methods,
                    args.k,
                    tune=not args.no_tune,
                    slices=args.slices,
                    root=root,
                )
            )
        except Exception:
            failed.append(name)
            print(f"[{name}] FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        timings[name] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    if not rows:
        print("no results: no dataset could be run", file=sys.stderr)
        return 1

    from recs.evaluation.report import format_table, plot_metrics, write_results

    ks = sorted(args.k)
    headline = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    print()
    print(format_table(rows, metrics=headline))
    out = Path(args.out)
    json_path, md_path = write_results(BENCHMARK, rows, out)
    # One chart per headline metric at the smallest k: baselines.png (NDCG), baselines_recall.png.
    pngs = [
        plot_metrics(rows, out / f"{BENCHMARK}.png", metric=f"ndcg@{ks[0]}"),
        plot_metrics(rows, out / f"{BENCHMARK}_recall.png", metric=f"recall@{ks[0]}"),
    ]
    for name, secs in timings.items():
        print(f"  {name}: {secs:.1f}s")
    written = ", ".join(str(p) for p in (json_path, md_path, *pngs))
    print(f"total {total:.1f}s; wrote {written}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
