"""`recs evaluate` and `recs benchmark`: the held-out protocol on a shop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recs.cli.common import (
    ConfigOption,
    OnBadRowsOption,
    SkipReportOption,
    app,
    check_results_outputs,
    console,
    data_config,
    handle_errors,
    load_shop,
    parse_int_list,
)
from recs.config import load_config
from recs.errors import ConfigError


@app.command("evaluate")
@handle_errors
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Shop folder.")],
    model: Annotated[str, typer.Option("--model", help="Comma-separated: popularity,repeat,cooc,als,bm25.")] = "popularity,repeat,cooc,als,bm25",
    k: Annotated[str, typer.Option("--k", help="Cut-offs, e.g. 10,50.")] = "10,50",
    out: Annotated[Path | None, typer.Option("--out", help="Write results JSON here (and .md beside it).")] = None,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Skip the validation search of als, tifu_knn and upcf.")] = False,
    artifact: Annotated[Path | None, typer.Option("--artifact", help="Also evaluate this trained model (two_tower and candidates).")] = None,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Evaluate baselines (and a trained model) with the next-basket protocol (last basket = test).

    A model from `recs train` held each user's last basket out of training (it was its validation
    set), so its figures here are on baskets it never trained on."""
    from recs.data.requirements import require_held_out, require_items
    from recs.data.splits import leave_last_out
    from recs.evaluation.baselines import BASELINES
    from recs.evaluation.report import format_table, write_results
    from recs.evaluation.runner import evaluate_baselines

    ks = parse_int_list(k, "--k")
    names = [m.strip() for m in model.split(",") if m.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"--model: unknown model(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if not names:
        raise ConfigError(f"--model: no model given; choose from {', '.join(BASELINES)}")
    if out is not None:
        check_results_outputs(out, (".json", ".md"))
    settings = data_config(on_bad_rows, config, skip_report)
    engine = None
    if artifact is not None:
        from recs.serving.engine import Engine

        engine = Engine.load(artifact)  # a bad artifact is refused before any work
    dataset = load_shop(data, settings)
    require_items(dataset.items, "recs evaluate")
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    require_held_out(split, "recs evaluate")
    console.print(split.describe(), highlight=False)
    rows = evaluate_baselines(names, dataset.items, split, ks, tune=not no_tune, dataset=data.name)
    if engine is not None:
        rows += evaluate_artifact(engine, artifact, dataset.items, split, ks, data.name)
    for row in rows:
        row.setdefault("dataset", data.name)
    metrics = [f"{m}@{kk}" for kk in ks for m in ("recall", "ndcg")]
    console.print(format_table(rows, metrics=metrics))
    if out is not None:
        json_path, md_path = write_results(out.stem, rows, out.parent)
        console.print(f"wrote {json_path} and {md_path}", highlight=False)


@app.command("benchmark")
@handle_errors
def benchmark(
    data: Annotated[Path, typer.Option("--data", help="Shop folder (items.*, events.*).")],
    out: Annotated[Path, typer.Option("--out", help="Results JSON; the .md table and the .png plot are written beside it.")] = Path("benchmark.json"),
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Overall training budget: half for the towers, a quarter for the cross-encoder (default: the config's limits).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Backbone: local Hugging Face BERT folder (default: [retrieval.towers] model, all-MiniLM-L6-v2 offline).")] = None,
    max_test_users: Annotated[int | None, typer.Option("--max-test-users", help="Score a seeded sample of N test users (default: all).")] = None,
    baselines: Annotated[str | None, typer.Option("--baselines", help="Comma-separated baselines (default: every registered one).")] = None,
    bundles: Annotated[bool, typer.Option("--bundles", help="Also compose bundles for the test baskets (tasks anchor_bundle, user_bundle) against cooc, item_similarity, tifu_knn, repeat and an untrained composer.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """The held-out protocol on a shop's own data: towers on the tune split, the ranking stage on
    each user's validation basket, then the engine, the two-tower and every baseline on the test
    baskets, with paired per-user comparisons (engine vs each baseline, 95% CI). `--bundles`:
    composed bundles scored against what the test baskets held."""
    from recs.evaluation.bundle_tasks import BUNDLE_METRICS, BUNDLE_TASKS
    from recs.evaluation.report import format_table, plot_metrics, write_results
    from recs.evaluation.shop_benchmark import PAIRED_METRIC, TABLE_METRICS, run_shop_benchmark
    from recs.io import remove_tree, work_dir_of, write_lock

    if max_test_users is not None and max_test_users < 1:
        raise ConfigError(f"--max-test-users must be positive, got {max_test_users}")
    if max_minutes is not None and not max_minutes > 0:  # NaN too
        raise ConfigError(f"--max-minutes must be positive, got {max_minutes}")
    check_results_outputs(out, (".json", ".md", ".png"))
    settings = load_config(config)
    if model is not None:
        towers = settings.retrieval.towers.model_copy(update={"model": model})
        settings = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update={"towers": towers})})
    names = [b.strip() for b in baselines.split(",") if b.strip()] if baselines else None
    dataset = load_shop(data, data_config(on_bad_rows, config, skip_report))
    name = data.resolve().name or "shop"
    # Scratch beside --out (not the system temp folder), so that the next run finds and removes
    # what a killed one left; the lock keeps two runs from sharing it. Checkpoints of this run
    # only: a trainer resuming from an earlier run's would skew the result.
    with write_lock(out):
        work = work_dir_of(out)
        try:
            result = run_shop_benchmark(
                dataset, settings, work, max_minutes, names, show_progress=not no_progress, name=name,
                max_test_users=max_test_users, log=lambda line: console.print(line, highlight=False), bundles=bundles,
            )
        finally:
            remove_tree(work)
    bundle_rows = [r for r in result.rows if r["slice"] in BUNDLE_TASKS]
    ranking_rows = [r for r in result.rows if r["slice"] not in BUNDLE_TASKS]
    console.print(format_table(ranking_rows, metrics=TABLE_METRICS), highlight=False)
    if bundle_rows:
        console.print(format_table(bundle_rows, metrics=(*BUNDLE_METRICS, "constraint_satisfaction")), highlight=False)
    paired = result.paired_lines()
    console.print(f"paired per-user {PAIRED_METRIC} on `all` (engine at default R = {result.default_rerank_top}):", highlight=False)
    for line in paired:
        console.print("  " + line, highlight=False)
    extra = {"paired": result.paired, "protocol": {"split": result.split, "default_rerank_top": result.default_rerank_top,
                                                   "max_minutes": max_minutes, "seconds": round(result.seconds, 1)}}
    json_path, md_path = write_results(out.stem, result.rows, out.parent, extra=extra,
                                       sections={f"Paired per-user {PAIRED_METRIC}, slice all": paired})
    png = plot_metrics(ranking_rows, out.with_suffix(".png"), metric=PAIRED_METRIC)
    console.print(f"benchmark took {result.seconds:.0f}s; wrote {json_path}, {md_path}, {png}", highlight=False)


def evaluate_artifact(engine: Any, artifact: Path, items: Any, split: Any, ks: list[int], dataset_name: str) -> list[dict[str, Any]]:
    from recs.evaluation.adapters import CandidatesRecommender, TwoTowerRecommender
    from recs.evaluation.protocol import evaluate as evaluate_model

    retriever = engine.retriever
    rows: list[dict[str, Any]] = []
    # `recs train-ranker` learns from these same last baskets, so scoring the ranking stage here
    # would be in-sample: its held-out figures come from `recs benchmark` (validation-basket
    # training, test-basket evaluation). The towers never trained on these baskets.
    recommenders: list[Any] = [TwoTowerRecommender(retriever=retriever), CandidatesRecommender(retriever=retriever)]
    if engine.pipeline.ranker is not None:
        console.print("note: the ranking stage is not scored here (it was trained on these baskets); "
                      "`recs benchmark --data DIR` gives its held-out figures", highlight=False)
    for recommender in recommenders:
        recommender.fit(split.fit_events, items)
        for slice_name, metrics in evaluate_model(recommender, split, items, ks=ks).items():
            rows.append({"dataset": dataset_name, "method": recommender.name, "slice": slice_name,
                         "metrics": metrics, "notes": f"artifact {artifact}"})
    return rows

