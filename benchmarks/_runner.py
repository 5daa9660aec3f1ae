"""The loop every model benchmark shares: each dataset in turn, failures reported, results written."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.datasets import datasets_root, missing_files

RunDataset = Callable[[str, Path, argparse.Namespace], list[dict[str, Any]]]


def run_all(args: argparse.Namespace, run_dataset: RunDataset, table_metrics: Sequence[str]) -> int:
    """Runs `run_dataset` for each name in `args.datasets` (comma-separated; `demo` is always
    available, real datasets are skipped with a message when absent), prints the table, writes
    `<args.out>/<args.name>.json|.md|.png`. Exit status 1 when a dataset failed or nothing ran."""
    from recs.evaluation.report import format_table, plot_metrics, write_results

    root = args.root or datasets_root()
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    rows: list[dict[str, Any]] = _kept_rows(args.out / f"{args.name}.json", names) if getattr(args, "merge", False) else []
    failed: list[str] = []
    for name in names:
        if name != "demo" and missing_files(name, root):
            print(f"[{name}] skipped: dataset files not found under {root}", flush=True)
            continue
        try:
            rows.extend(run_dataset(name, root, args))
        except Exception:
            failed.append(name)
            print(f"[{name}] FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        if rows:  # written after every dataset: a long run that is stopped keeps what it finished
            write_results(args.name, rows, args.out)
    if not rows:
        return 1
    print(format_table(rows, metrics=tuple(table_metrics)))
    json_path, md_path = write_results(args.name, rows, args.out)
    plot_metrics([r for r in rows if r["slice"] == "all"], args.out / f"{args.name}.png", metric="ndcg@10")
    print(f"wrote {json_path}, {md_path}")
    return 1 if failed else 0


def _kept_rows(path: Path, rerun: Sequence[str]) -> list[dict[str, Any]]:
    """`--merge`: the rows of an earlier results file for every dataset not being re-run."""
    import json

    if not path.is_file():
        return []
    document = json.loads(path.read_text(encoding="utf-8"))
    return [r for r in document.get("rows", []) if r.get("dataset") not in set(rerun)]


def add_merge_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--merge", action="store_true",
                        help="keep the other datasets' rows of the existing results file (re-run some datasets only)")
