"""Bad-input cases: CLI options and output targets, and shops too small to learn from. Every case
fails before any training; see `tests/bad_inputs/case.py` for what a case is."""

from __future__ import annotations

from collections.abc import Callable

from tests.bad_inputs.case import CliCase, Workspace, cli_case, make_folder, write_file

ONE_ITEM_ITEMS = "item_id,title,price\nC1,Arabica Coffee Beans 1kg,15.00\n"
ONE_ITEM_EVENTS = ("user_id,item_id,timestamp,event,order_id\n"
                   "u1,C1,2026-01-01T09:00:00Z,purchase,o1\nu1,C1,2026-01-15T09:00:00Z,purchase,o2\n"
                   "u2,C1,2026-01-02T09:00:00Z,purchase,o3\nu2,C1,2026-01-20T09:00:00Z,purchase,o4\n")
# Every user bought once: no basket follows an earlier one, so nothing to learn or hold out.
ONE_EVENT_EACH = ("user_id,item_id,timestamp,event,order_id\n"
                  "u1,C1,2026-01-01T09:00:00Z,purchase,o1\nu2,T1,2026-01-02T09:00:00Z,purchase,o2\n"
                  "u3,P1,2026-01-03T09:00:00Z,purchase,o3\n")


def _file(name: str) -> Callable[[Workspace], None]:
    """A plain file at `{tmp}/name`, where a folder (or a folder above an output) is expected."""
    def setup(ws: Workspace) -> None:
        (ws.tmp / name).write_text("not a folder\n", encoding="utf-8")

    return setup


def _shop(items: str | None, events: str) -> Callable[[Workspace], None]:
    """The conftest shop with its events (and, when given, its items) replaced."""
    def setup(ws: Workspace) -> None:
        if items is not None:
            (ws.shop / "items.csv").write_text(items, encoding="utf-8")
        (ws.shop / "events.csv").write_text(events, encoding="utf-8")
        (ws.shop / "bundles.csv").unlink()

    return setup


CASES: list[CliCase] = [
    # query, bundle, build-index, data demo: option values
    cli_case("query-k-zero", "query --model {model} --user U0001 --k 0", 2, ("positive", "0")),
    cli_case("query-k-negative", "query --model {model} --user U0001 --k -1", 2, ("positive", "-1")),
    cli_case("query-k-not-a-number", "query --model {model} --user U0001 --k abc", 2, ("invalid value", "--k")),
    cli_case("build-index-kind-bogus", "build-index --model {model} --kind bogus", 2, ("--kind", "bogus")),
    cli_case("bundle-size-reversed", "bundle --model {model} --item I00001 --size 3-2", 2, ("--size", "3-2")),
    cli_case("bundle-size-not-a-range", "bundle --model {model} --item I00001 --size x", 2, ("--size", "min-max")),
    cli_case("bundle-n-zero", "bundle --model {model} --item I00001 --n 0", 2, ("--n", "positive")),
    cli_case("demo-scale-zero", "data demo --out {tmp}/demo --scale 0", 2, ("--scale", "positive")),
    cli_case("demo-scale-negative", "data demo --out {tmp}/demo --scale -1", 2, ("--scale", "positive")),
    # evaluate
    cli_case("evaluate-k-zero", "evaluate --data {shop} --k 0", 2, ("--k", "positive")),
    cli_case("evaluate-k-not-integers", "evaluate --data {shop} --k abc", 2, ("--k", "integers", "abc")),
    cli_case("evaluate-unknown-model", "evaluate --data {shop} --model baseline", 2, ("unknown model", "baseline")),
    cli_case("evaluate-out-not-json", "evaluate --data {shop} --out {tmp}/results.txt", 2, ("--out", ".json")),
    cli_case("evaluate-out-under-a-file", "evaluate --data {shop} --out {tmp}/afile/x.json", 2,
             ("--out", "afile", "is a file"), _file("afile")),
    cli_case("evaluate-artifact-missing", "evaluate --data {shop} --artifact {tmp}/missing", 4, ("artifact", "not found")),
    cli_case("evaluate-no-held-out-basket", "evaluate --data {shop}", 2, ("two purchase baskets",), _shop(None, ONE_EVENT_EACH)),
    cli_case("evaluate-on-bad-rows-bogus", "evaluate --data {shop} --on-bad-rows bogus", 2, ("--on-bad-rows", "error", "skip")),
    # benchmark
    cli_case("benchmark-max-test-users-zero", "benchmark --data {shop} --out {tmp}/b.json --max-test-users 0", 2,
             ("--max-test-users", "positive")),
    cli_case("benchmark-max-minutes-negative", "benchmark --data {shop} --out {tmp}/b.json --max-minutes -1", 2,
             ("--max-minutes", "positive")),
    cli_case("benchmark-out-not-json", "benchmark --data {shop} --out {tmp}/b.txt", 2, ("--out", ".json")),
    cli_case("benchmark-out-onto-a-folder", "benchmark --data {shop} --out {tmp}/b.json", 2, ("--out", "is a folder"),
             make_folder("b.json")),
    cli_case("benchmark-one-item-shop", "benchmark --data {shop} --out {tmp}/b.json", 2, ("at least 2 items",),
             _shop(ONE_ITEM_ITEMS, ONE_ITEM_EVENTS)),
    # train: options, --config, --out (all checked before the data is read)
    cli_case("train-epochs-zero", "train --data {shop} --out {tmp}/m --epochs 0", 2, ("epochs", "greater than or equal to 1")),
    cli_case("train-max-pairs-zero", "train --data {shop} --out {tmp}/m --max-pairs 0", 2, ("max_pairs", "greater than or equal to 1")),
    cli_case("train-max-minutes-negative", "train --data {shop} --out {tmp}/m --max-minutes -1", 2, ("max_minutes", "greater than 0")),
    cli_case("train-on-bad-rows-bogus", "train --data {shop} --out {tmp}/m --on-bad-rows bogus", 2, ("--on-bad-rows", "error", "skip")),
    cli_case("train-config-missing", "train --data {shop} --out {tmp}/m --config {tmp}/missing.toml", 2,
             ("missing.toml", "cannot read toml")),
    cli_case("train-config-invalid-toml", "train --data {shop} --out {tmp}/m --config {tmp}/bad.toml", 2,
             ("bad.toml", "cannot read toml"), write_file("bad.toml", "[retrieval\nepochs =\n")),
    cli_case("train-config-unknown-key", "train --data {shop} --out {tmp}/m --config {tmp}/typo.toml", 2,
             ("typo.toml", "retrieval.train.epoch", "extra inputs"), write_file("typo.toml", "[retrieval.train]\nepoch = 1\n")),
    cli_case("train-out-onto-a-file", "train --data {shop} --out {tmp}/afile", 2, ("--out", "afile", "not a folder"), _file("afile")),
    cli_case("train-out-onto-a-non-artifact-folder", "train --data {shop} --out {shop}", 2, ("--out", "not an artifact")),
    cli_case("train-out-under-a-file", "train --data {shop} --out {tmp}/afile/model", 2, ("--out", "is a file"), _file("afile")),
    # train: shops too small to learn from (refused before the backbone loads)
    cli_case("train-one-item-shop", "train --data {shop} --out {tmp}/m", 2, ("at least 2 items", "nothing to rank"),
             _shop(ONE_ITEM_ITEMS, ONE_ITEM_EVENTS)),
    cli_case("train-one-event-per-user", "train --data {shop} --out {tmp}/m", 2, ("nothing to train", "more than one visit"),
             _shop(None, ONE_EVENT_EACH)),
    # export-vectors and export
    cli_case("export-vectors-to-bogus", "export-vectors --model {model} --to bogus --out {tmp}/v", 2, ("--to", "bogus")),
    cli_case("export-vectors-pgvector-without-dsn", "export-vectors --model {model} --to pgvector", 2, ("pgvector", "--dsn")),
    cli_case("export-vectors-npy-onto-a-file", "export-vectors --model {model} --to npy --out {tmp}/afile", 2,
             ("--out", "is a file"), _file("afile")),
    cli_case("export-vectors-parquet-onto-a-folder", "export-vectors --model {model} --to parquet --out {tmp}/adir", 2,
             ("--out", "is a folder"), make_folder("adir")),
    cli_case("export-vectors-unknown-field", "export-vectors --model {model} --to parquet --out {tmp}/v.parquet --fields bogus", 2,
             ("--fields", "bogus")),
    cli_case("export-out-onto-a-non-artifact-folder", "export --model {model} --out {shop}", 2, ("--out", "not an artifact")),
    cli_case("export-out-same-as-model", "export --model {model} --out {model}", 2, ("--out", "differ")),
    # train-ranker and train-bundler (the model is loaded, then the options checked, before the data)
    cli_case("train-ranker-rerank-top-negative", "train-ranker --model {model} --data {demo} --rerank-top -1", 2,
             ("--rerank-top", "greater than or equal to 0")),
    cli_case("train-ranker-ce-epochs-zero", "train-ranker --model {model} --data {demo} --ce-epochs 0", 2,
             ("epochs", "greater than or equal to 1")),
    cli_case("train-ranker-model-not-an-artifact", "train-ranker --model {shop} --data {shop}", 4, ("not an artifact",)),
    cli_case("train-ranker-one-item-shop", "train-ranker --model {model} --data {shop}", 2, ("train-ranker", "at least 2 items"),
             _shop(ONE_ITEM_ITEMS, ONE_ITEM_EVENTS)),
    cli_case("train-ranker-no-held-out-basket", "train-ranker --model {model} --data {shop}", 2,
             ("train-ranker", "two purchase baskets"), _shop(None, ONE_EVENT_EACH)),
    cli_case("train-bundler-epochs-zero", "train-bundler --model {model} --data {demo} --epochs 0", 2,
             ("epochs", "greater than or equal to 1")),
    cli_case("train-bundler-max-minutes-negative", "train-bundler --model {model} --data {demo} --max-minutes -1", 2,
             ("max_minutes", "greater than 0")),
]
