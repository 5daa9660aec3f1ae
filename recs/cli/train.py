"""`recs train` (and `--resume-from`), `build-index`, `train-ranker`, `train-bundler`, `config show`."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from recs.cli.common import (
    ConfigOption,
    OnBadRowsOption,
    SkipReportOption,
    app,
    check_output,
    config_app,
    console,
    data_config,
    handle_errors,
    load_model_to_update,
    load_shop,
    model_config,
    print_warning,
    writes_artifact,
)
from recs.config import load_config
from recs.distributed import distributed_session, world
from recs.errors import ConfigError


def _torchrun_command(ctx: typer.Context, nproc: int) -> list[str]:
    """This `recs train` call as a `torchrun --nproc_per_node N` command, without --nproc: the
    options are read back from the parsed parameters (so it works however recs was called)."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name == "nproc" or value is None or value == param.default or param.param_type_name != "option":
            continue
        if param.is_flag:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            args += [param.opts[0], str(value)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "recs.cli", "train", *args]


def _launches_ranks(func):  # type: ignore[no-untyped-def]
    """`--nproc N`: run this command under torchrun (N processes) instead, before any lock is taken
    (rank 0 takes it) and before any data is read; its exit code is the command's."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        nproc = kwargs.get("nproc")
        if nproc is None or nproc == 1:
            return func(*args, **kwargs)
        if nproc < 1:
            raise ConfigError(f"--nproc must be at least 1, got {nproc}")
        if world().distributed:
            raise ConfigError("--nproc: this is already one of torchrun's processes; leave --nproc out")
        if kwargs.get("resume_from") is not None:
            raise ConfigError("--nproc: --resume-from trains in one process; leave --nproc out")
        check_output(kwargs["out"], "--out", "artifact")
        code = subprocess.call(_torchrun_command(kwargs["ctx"], nproc))
        if code:
            raise typer.Exit(code)
        return None

    return wrapper


@app.command("train")
@handle_errors
@_launches_ranks
@writes_artifact("out", create=True)
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Artifact folder to write (an artifact there is replaced atomically; a file or a folder of other files is refused before training).")],
    data: Annotated[Path | None, typer.Option("--data", help="Shop folder (items.*, events.*); with --resume-from, its events after the model's log are the new ones.")] = None,
    resume_from: Annotated[Path | None, typer.Option("--resume-from", help="Continue this torch artifact's fine-tuning on the events after its log (from --data or --events) and write a full new artifact to --out (may be the same folder).")] = None,
    events: Annotated[str | None, typer.Option("--events", help="With --resume-from: the event store holding the new events (SQLite file or postgresql:// DSN); the catalog stays the model's.")] = None,
    replay: Annotated[float, typer.Option("--replay", help="With --resume-from: pairs from before the new events replayed per new pair, so that the towers do not forget (0: none).")] = 0.5,
    model: Annotated[str | None, typer.Option("--model", help="Local Hugging Face BERT folder (default: [retrieval.towers] model, all-MiniLM-L6-v2 offline).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    max_pairs: Annotated[int | None, typer.Option("--max-pairs", help="Training pairs sampled per epoch.")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop training after this long.")] = None,
    train_layers: Annotated[int | None, typer.Option("--train-layers", help="Fine-tune only the top N layers (-1: all).")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Fine-tune with LoRA adapters (peft).")] = False,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate of the backbone layers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the config's, 0).")] = None,
    nproc: Annotated[int | None, typer.Option("--nproc", help="Train data-parallel on N processes (one per GPU; gloo on CPU) through torchrun; batch_size stays the global batch.")] = None,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Fine-tune the user and item towers on a shop and save the artifact (towers, vectors, index).
    Flags override the [retrieval] section of --config. The options and --out are checked before
    the data is read; an artifact already at --out is replaced atomically at the end.
    With --resume-from ART: continue ART's fine-tuning on the new events (see README).
    Under torchrun (or with --nproc N) the towers train data-parallel; rank 0 writes the artifact."""
    from recs.data.requirements import require_items
    from recs.serving.fit import train_towers_step

    train_updates: dict[str, Any] = {} if seed is None else {"seed": seed}
    if lr is not None:
        train_updates["lr"] = lr
    if epochs is not None:
        train_updates["epochs"] = epochs
    if max_pairs is not None:
        train_updates["max_pairs_per_epoch"] = max_pairs
    if max_minutes is not None:
        train_updates["max_minutes"] = max_minutes
    if train_layers is not None:
        train_updates["train_layers"] = None if train_layers < 0 else train_layers
    if lora:
        train_updates["lora"] = True
    if resume_from is not None and world().distributed:
        raise ConfigError("--resume-from trains in one process: run it without torchrun")
    if resume_from is not None:
        if model is not None:
            raise ConfigError("--model: with --resume-from the towers are the artifact's; leave --model out")
        _resume_training(resume_from, out, data, events, replay, train_updates, on_bad_rows, skip_report, config)
        return
    if data is None or events is not None:
        raise ConfigError("give --data SHOP (--events is for --resume-from)")
    settings = load_config(config)
    base = settings.retrieval
    towers = base.towers.model_dump() if model is None else {**base.towers.model_dump(), "model": model}
    retrieval = type(base).parse_dict(
        {**base.model_dump(), "towers": towers, "train": {**base.train.model_dump(), **train_updates}}, source="recs train"
    )
    settings = settings.model_copy(update={"retrieval": retrieval, "data": data_config(on_bad_rows, config, skip_report)})
    check_output(out, "--out", "artifact")
    dataset = load_shop(data, settings.data)
    require_items(dataset.items, "recs train")
    with distributed_session() as ranks:
        processes = f" on {ranks.size} processes" if ranks.distributed else ""
        if ranks.is_main:
            console.print(f"training on {dataset.events.height} events, {dataset.items.height} items, model "
                          f"{retrieval.towers.model}{processes}", highlight=False)
        retriever = train_towers_step(dataset, settings, out)
    if ranks.is_main:
        _print_train_report(retriever)
        console.print(f"saved {out}", highlight=False)


def _print_train_report(retriever: Any) -> None:
    rep = retriever.report
    if rep is not None and rep.history:
        best = next((h for h in rep.history if h.get("epoch") == rep.best_epoch), rep.history[-1])
        if "ndcg@10" in best:
            scored = (f"best epoch {rep.best_epoch}: recall@10 {best.get('recall@10', 0):.4f}, ndcg@10 {best['ndcg@10']:.4f} "
                      "(validation: last basket)")
        else:
            new = " holds an item new to the user" if retriever.config.train.positives == "new_to_user" else " follows earlier events"
            scored = f"no validation users (no user's last purchase basket{new}): the last epoch ({rep.best_epoch}) is kept"
        console.print(f"trained {rep.steps} steps in {rep.seconds:.0f}s on {rep.pairs} pairs; {scored}", highlight=False)


def _resume_training(
    start_path: Path, out: Path, data: Path | None, store: str | None, replay: float, train_updates: dict[str, Any],
    on_bad_rows: str | None, skip_report: Path | None, config_path: Path | None,
) -> None:
    """`recs train --resume-from`: the logic is recs/serving/resume.py's."""
    from recs.serving.resume import (
        check_replay,
        load_start,
        resume_settings,
        resume_step,
        shop_log,
        store_log,
    )

    if (data is None) == (store is None):
        raise ConfigError("--resume-from needs the new events: give --data SHOP or --events STORE (one of them)")
    check_replay(replay)
    artifact, start = load_start(start_path)
    settings = resume_settings(artifact, start, load_config(config_path) if config_path is not None else None, train_updates)
    if config_path is not None or on_bad_rows is not None or skip_report is not None:
        settings = settings.model_copy(update={"data": data_config(on_bad_rows, config_path, skip_report)})
    if data is not None:
        dataset = load_shop(data, settings.data)
        log = shop_log(start, dataset.events)
        retriever, report = resume_step(artifact, start, log, settings, out, items=dataset.items, bundles=dataset.bundles,
                                        replay=replay)
    else:
        from recs.serving.eventstore import open_store

        if not store.startswith(("postgresql://", "postgres://")) and not Path(store).is_file():  # type: ignore[union-attr]
            raise ConfigError(f"--events {store}: no event store there (a SQLite file, or a postgresql:// DSN)")
        events = open_store(store)  # type: ignore[arg-type]
        try:
            retriever, report = resume_step(artifact, start, store_log(start, events), settings, out, replay=replay, store=events)
        finally:
            events.close()
    ignored = f" ({report.ignored_events} already in its log or of unknown items left out)" if report.ignored_events else ""
    console.print(f"resumed {start_path} (its log ends {report.log_end}) on {report.new_events} new events of "
                  f"{report.new_users} user(s){ignored}, {report.new_items} new item(s)", highlight=False)
    console.print(f"training pairs: {report.new_pairs} new + {report.replayed_pairs} replayed", highlight=False)
    _print_train_report(retriever)
    if retriever.report is not None and retriever.report.best_epoch == 0:
        print_warning(f"no epoch beat the starting weights on validation: the towers stay those of {start_path} "
                      "(the catalog's vectors, index, log and statistics are new)")
    for part in report.retrained:
        console.print(f"retrained the {part} on the new towers", highlight=False)
    console.print(f"saved {out}", highlight=False)


@app.command("build-index")
@handle_errors
@writes_artifact("model")
def build_index(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder from `recs train`.")],
    items: Annotated[Path | None, typer.Option("--items", help="A new catalog file to encode (default: the trained one).")] = None,
    kind: Annotated[str, typer.Option("--kind", help="auto | flat | hnsw | ivfpq")] = "auto",
    from_shards: Annotated[Path | None, typer.Option("--from-shards", help="Vector shards from `recs encode` (of this catalog, or of --items): indexed shard by shard, not encoded again.")] = None,
    sample: Annotated[int, typer.Option("--sample", help="--from-shards: vectors (seeded sample) the ivfpq quantiser is trained on.")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="--from-shards: seed of that sample.")] = 0,
) -> None:
    """Encode the catalog with the item tower and (re)build the FAISS index inside the artifact."""
    from recs.data.load import load_catalog
    from recs.retrieval.retriever import Retriever

    if kind not in ("auto", "flat", "hnsw", "ivfpq"):
        raise ConfigError(f"--kind must be auto, flat, hnsw or ivfpq, got '{kind}'")
    catalog = None if items is None else load_catalog(items)  # a bad file fails before the model loads
    manifest = None
    if from_shards is not None:
        from recs.batch.shards import read_manifest

        manifest = read_manifest(from_shards)
    retriever = Retriever.load(model)
    if manifest is None:
        retriever = retriever.with_catalog(items=catalog, kind=kind, show_progress=True)
    else:
        from recs.artifacts import open_artifact
        from recs.batch.encode import model_identity
        from recs.batch.index import index_from_shards

        made_by = manifest.model
        if not made_by.get("onnx") and made_by.get("towers_sha256") != model_identity(open_artifact(model))["towers_sha256"]:
            print_warning(f"--from-shards: the shards were encoded by other towers ({made_by.get('artifact')}) than {model}'s")
        if manifest.dim != retriever.towers.dim:
            raise ConfigError(f"--from-shards: vectors of dim {manifest.dim}, the model's towers make {retriever.towers.dim}")
        index, vectors = index_from_shards(manifest, retriever.items if catalog is None else catalog, kind, sample, seed,
                                           show_progress=True)
        retriever = retriever.with_catalog(items=catalog, kind=kind, item_vectors=vectors, index=index)
    retriever.save(model)
    console.print(f"indexed {len(retriever.catalog)} items ({retriever.index!r}) into {model}", highlight=False)


@app.command("train-bundler")
@handle_errors
@writes_artifact("model")
def train_bundler_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder from `recs train` (updated in place, atomically).")],
    data: Annotated[Path, typer.Option("--data", help="Shop folder: baskets from events.* and/or curated bundles from bundles.*.")],
    epochs: Annotated[int, typer.Option(help="Most training epochs (early stopping on validation).")] = 30,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Stop training after this long.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Train the set scorer (what goes together) on orders, sessions and curated bundles.
    Flags override the [bundling.train] section of --config."""
    from recs.serving.fit import train_bundler_step

    retriever = load_model_to_update(model)
    settings = model_config(model, config)
    bundling = settings.bundling
    train_cfg = type(bundling.train).parse_dict(
        {**bundling.train.model_dump(), "epochs": epochs, "max_minutes": max_minutes, "seed": seed}, source="train-bundler")
    settings = settings.model_copy(update={"bundling": bundling.model_copy(update={"train": train_cfg})})
    dataset = load_shop(data, data_config(on_bad_rows, config, skip_report), require_events=False)
    bundler = train_bundler_step(retriever, dataset, settings, model)
    rep = bundler.report
    sets = ", ".join(f"{n} {kind}s" for kind, n in sorted(rep.get("sets", {}).items()))
    # The final scorer's validation metrics (at its residual gate); older reports: the best epoch's.
    best = rep.get("valid_metrics") or next((h for h in rep.get("history", []) if h.get("epoch") == rep.get("best_epoch")), {})

    def aucs(metrics: dict) -> str:
        return ", ".join(f"{k.removeprefix('auc_')} {v:.3f}" for k, v in metrics.items() if k.startswith("auc_") and isinstance(v, float))

    gate = f", residual gate {rep['residual_gate']:g}" if "residual_gate" in rep else ""
    prior = f" (prior alone: {aucs(rep['prior_metrics'])})" if rep.get("prior_metrics") else ""
    console.print(f"set scorer trained on {sets} in {rep.get('seconds', 0):.0f}s; best epoch {rep.get('best_epoch')}{gate}: "
                  f"validation AUC vs {aucs(best)}{prior}", highlight=False)
    if bundler.item_model is not None:
        item_model = bundler.item_model
        chosen = ", ".join(f"{mode} {weight:g}" for mode, weight in item_model.item_weights.items())
        trees = item_model.report.get("boosters") or {}
        kind = ("LightGBM trees: " + ", ".join(f"{m} {r.get('trees', 0)}" for m, r in trees.items())) if trees else "logistic"
        console.print(f"bundle item model ({kind}) fitted on {item_model.report.get('baskets', 0)} held-out baskets (each user's last of 3+ items)"
                      + (f"; its weight in the compose objective, chosen on them: {chosen}" if chosen else ""), highlight=False)
    console.print(f"saved set scorer into {model}", highlight=False)


@app.command("train-ranker")
@handle_errors
@writes_artifact("model")
def train_ranker_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder from `recs train` (updated in place, atomically).")],
    data: Annotated[Path, typer.Option("--data", help="The shop folder the towers were trained on.")],
    no_ranker: Annotated[bool, typer.Option("--no-ranker", help="Train no learned ranker (nor discover ranker); existing ones are removed, with a warning.")] = False,
    no_cross_encoder: Annotated[bool, typer.Option("--no-cross-encoder", help="Train no cross-encoder; an existing one is removed, with a warning (it was a residual on the old ranker's scores).")] = False,
    rerank_top: Annotated[int | None, typer.Option("--rerank-top", help="Default R: top items the cross-encoder rescores (default: chosen on held-out users; 0 when reranking does not help).")] = None,
    ce_epochs: Annotated[int, typer.Option("--ce-epochs", help="Cross-encoder epochs.")] = 2,
    ce_max_minutes: Annotated[float | None, typer.Option("--ce-max-minutes", help="Stop cross-encoder training after this long.")] = None,
    on_bad_rows: OnBadRowsOption = None,
    skip_report: SkipReportOption = None,
    config: ConfigOption = None,
) -> None:
    """Train the ranking stage (learned ranker, discover ranker, cross-encoder) on each user's last
    basket (held out from the towers). It replaces the model's whole ranking stage: a part a --no-*
    flag leaves out, or one the data cannot train, is removed and a warning says so.
    Flags override the [ranking] section of --config."""
    from recs.serving.fit import train_ranking_step

    retriever = load_model_to_update(model)
    settings = model_config(model, config)
    ranking = settings.ranking
    cross = ranking.cross_encoder.model_copy(update={"epochs": ce_epochs, "max_minutes": ce_max_minutes})
    ranking = type(ranking).parse_dict(
        {**ranking.model_dump(), "train_ranker": not no_ranker, "train_cross_encoder": not no_cross_encoder,
         "cross_encoder": cross.model_dump()}, source="train-ranker")
    if rerank_top is not None:  # RankOptions' own rule, checked before any work
        type(settings.serving.options).parse_dict({**settings.serving.options.model_dump(), "rerank_top": rerank_top},
                                                  source="--rerank-top")
    settings = settings.model_copy(update={"ranking": ranking})
    dataset = load_shop(data, data_config(on_bad_rows, config, skip_report))
    models, options = train_ranking_step(retriever, dataset, settings, model, rerank_top=rerank_top)
    decision = models.report.get("rerank_decision")
    report = models.report
    if "ranker" in report:
        valid = report["ranker"].get("valid_ndcg@10", float("nan"))
        scored = f"validation ndcg@10 {valid:.4f}" if valid == valid else "no validation (too few queries to hold some out)"
        console.print(f"ranker: {report.get('queries_with_positive', 0)}/{report.get('queries', 0)} training queries with a "
                      f"positive among their candidates; {scored}", highlight=False)
    if "discover" in report:
        console.print(f"discover ranker (--novelty shelf): validation AUC {report['discover'].get('valid_auc', float('nan')):.4f}",
                      highlight=False)
    if models.cross_encoder is not None and models.cross_encoder.report is not None:
        ce = models.cross_encoder.report
        ranker_alone = next((h["valid_ndcg@10"] for h in ce.history if h.get("epoch") == 0), float("nan"))
        console.print(f"cross-encoder: {ce.steps} steps in {ce.seconds:.0f}s, validation ndcg@10 of its lists "
                      f"{ce.best_metric:.4f} (ranker alone {ranker_alone:.4f})", highlight=False)
    if decision is not None and "ndcg@10_first_stage" in decision:
        tried = ", ".join(f"R={k.rsplit('_', 1)[1]} {v:.4f}" for k, v in decision.items() if k.startswith("ndcg@10_rerank_"))
        console.print(
            f"held-out users ({decision['queries']}): ndcg@10 ranker {decision['ndcg@10_first_stage']:.4f}, reranked {tried}",
            highlight=False,
        )
    if models.cross_encoder is not None:
        console.print(
            f"default R = {options.rerank_top}" + (" (reranking off by default: the cross-encoder did not add NDCG; "
                                                  "`recs query --rerank-top R` turns it on)" if options.rerank_top == 0 else ""),
            highlight=False,
        )
    if "cross_encoder_skipped" in report:
        print_warning(f"cross-encoder not trained: it {report['cross_encoder_skipped']}")
    for name in report.get("removed", []):
        hint = "; train-ranker without --no-cross-encoder trains a new one" if name == "cross_encoder" and no_cross_encoder else ""
        print_warning(f"removed the existing {REMOVED_WHY.get(name, name)}{hint}")
    console.print(f"saved ranking stage into {model}", highlight=False)


# Why train-ranker removes a ranking component it did not train (see `save_ranking`).
REMOVED_WHY: dict[str, str] = {
    "ranker": "learned ranker (--no-ranker): the first stage is now the candidates' retrieval order",
    "discover": "discover ranker (none was trained this time): the --novelty shelf uses the first stage's order",
    "cross_encoder": "cross-encoder (it was trained on the old ranker's scores, which this run replaced)",
    "stage2": "second-stage ranker of an older recs (no longer used)",
}


@config_app.command("show")
@handle_errors
def config_show(
    model: Annotated[Path | None, typer.Option("--model", help="Artifact folder: the configuration it was trained with.")] = None,
    config: ConfigOption = None,
) -> None:
    """Print the whole configuration (every section, defaults filled in) as JSON: of a model, of a
    TOML file, or the defaults."""
    if model is not None and config is not None:
        raise ConfigError("give --model or --config, not both")
    settings = model_config(model, None) if model is not None else load_config(config)
    console.print_json(json.dumps(settings.model_dump(mode="json")))

