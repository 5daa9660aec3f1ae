"""The CLI through typer's test runner: commands work, errors are one line with an exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recs.cli import app
from recs.serving import Engine

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_demo_items_only_writes_the_catalog_alone(tmp_path: Path) -> None:
    code, out = run("data", "demo", "--out", str(tmp_path / "shop"), "--scale", "0.1", "--items-only")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == ["items.csv"]


def test_validate_ok(shop_dir: Path) -> None:
    code, out = run("data", "validate", str(shop_dir / "items.csv"), str(shop_dir / "events.csv"), str(shop_dir / "bundles.csv"))
    assert code == 0, out
    assert "items: 10" in out and "baskets:" in out and "no problems found" in out


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,price\nA,Lamp,-1\nB,,2\nB,Mug,x\n")
    code, out = run("data", "validate", str(items))
    assert code == 2
    assert "items.csv row 1, column price: negative price" in out
    assert "items.csv row 2, column title: title is empty" in out
    assert "items.csv row 3, column item_id: duplicate item_id 'B'" in out
    assert "Traceback" not in out


def test_bad_data_is_one_line_error(tmp_path: Path, shop_dir: Path) -> None:
    shutil.copy(shop_dir / "items.csv", tmp_path / "items.csv")
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\nu1,T1,not-a-time\n")
    result = runner.invoke(app, ["data", "profile", "--data", str(tmp_path), "--user", "u1"])
    assert result.exit_code == 2
    assert "events.csv row 1, column timestamp" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_profile(shop_dir: Path) -> None:
    code, out = run("data", "profile", "--data", str(shop_dir), "--user", "u1")
    assert code == 0, out
    assert "Grocery > Coffee > Beans" in out
    code, out = run("data", "profile", "--data", str(shop_dir), "--user", "ghost")
    assert code == 3 and "ghost" in out


def test_demo_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        code, out = run("data", "demo", "--out", str(tmp_path / name), "--seed", "7", "--scale", "0.1")
        assert code == 0, out
    for file in ("items.csv", "events.csv", "bundles.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_evaluate_baselines_writes_json(shop_dir: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "res.json"
    code, out = run("evaluate", "--data", str(shop_dir), "--model", "popularity,repeat", "--k", "5", "--out", str(out_file))
    assert code == 0, out
    rows = json.loads(out_file.read_text())["rows"]
    assert {r["method"] for r in rows} == {"popularity", "repeat"}
    code, out = run("evaluate", "--data", str(shop_dir), "--model", "magic")
    assert code == 2 and "unknown model" in out


def test_query_and_build_index(trained_artifact: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    code, out = run("build-index", "--model", str(model), "--kind", "flat")
    assert code == 0, out
    from recs.retrieval.retriever import Retriever

    user = Retriever.load(model).events["user_id"][0]
    code, out = run("query", "--model", str(model), "--user", user, "--k", "5")
    assert code == 0, out
    assert "rank" in out and "source" in out
    code, out = run("query", "--model", str(model), "--user", "ghost", "--unknown-user", "raise")
    assert code == 3 and "unknown user" in out
    code, out = run("query", "--model", str(model), "--text", "camping tent", "--k", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out = run("query", "--model", str(tmp_path / "missing"), "--user", user)
    assert code == 4 and "Traceback" not in out


def test_train_ranker_reports_the_default_r(trained_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    code, out = run("train-ranker", "--model", str(model), "--data", str(small_demo_dir), "--ce-epochs", "1",
                    "--ce-max-minutes", "0.1")
    assert code == 0, out
    assert "validation ndcg@10" in out and "default R = " in out
    r = json.loads((model / "rank_options.json").read_text())["rerank_top"]
    assert f"default R = {r}" in out and r in (0, 10, 20)
    assert Engine.load(model).options.rerank_top == r
    saved = json.loads((model / "recs_config.json").read_text())
    assert saved["serving"]["options"]["rerank_top"] == r and saved["ranking"]["cross_encoder"]["epochs"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".model.lock"]  # no .model.work left


def test_saved_serving_defaults_survive_without_a_ranker(trained_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    """`train-ranker --no-ranker` used to print "default R = 0" while Engine.load served R = 20."""
    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    code, out = run("train-ranker", "--model", str(model), "--data", str(small_demo_dir), "--no-ranker", "--no-cross-encoder",
                    "--rerank-top", "0")
    assert code == 0, out
    assert Engine.load(model).options.rerank_top == 0
    code, out = run("config", "show", "--model", str(model))
    assert code == 0 and '"rerank_top": 0' in out
    code, out = run("query", "--model", str(model), "--user", "U0001", "--rerank-top", "5", "--json")
    assert code == 0, out


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_skip_lists_dropped_and_nulled_rows_and_writes_the_report(shop_dir: Path, tmp_path: Path) -> None:
    _edit(shop_dir / "items.csv", "T2,Summit 4-Person Tunnel Tent,", "T2,,")  # row 2: dropped, and its event
    _edit(shop_dir / "items.csv", "599.00", "free")  # P1 (row 8): price set to null, the item kept
    _edit(shop_dir / "events.csv", "u4,M1,2026-01-10T08:00:00Z", "u4,M1,someday")  # row 17: dropped
    report = tmp_path / "reports" / "skipped.csv"
    code, out = run("evaluate", "--data", str(shop_dir), "--model", "popularity", "--no-tune", "--k", "5",
                    "--on-bad-rows", "skip", "--skip-report", str(report))
    assert code == 0, out
    for line in (
        "items.csv: 1 rows dropped (empty title)",
        "events.csv: 1 rows dropped (event for unknown item)",
        "events.csv: 1 rows dropped (unparseable timestamp)",
        "items.csv: 1 values set to null (not a number)",
        "  items.csv row 2, column title: title is empty -> row dropped",
        "  items.csv row 8, column price: 'free' is not a number -> set to null",
        "  events.csv row 8, column item_id: item 'T2' was dropped above (items.csv row 2) -> row dropped",
        "  events.csv row 17, column timestamp: 'someday' is not an ISO-8601 time or epoch seconds -> row dropped",
        f"all 4 problems (rows dropped, values set to null) are listed in {report}",
    ):
        assert line in out, out
    rows = [line.split(",") for line in report.read_text().splitlines()]
    assert rows[0] == ["file", "row", "column", "kind", "message", "action"]
    assert [r[:3] + r[-1:] for r in rows[1:]] == [
        ["items.csv", "2", "title", "row dropped"], ["items.csv", "8", "price", "set to null"],
        ["events.csv", "8", "item_id", "row dropped"], ["events.csv", "17", "timestamp", "row dropped"],
    ]


def test_skip_shows_the_first_20_rows_and_writes_all_beside_the_run(shop_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    clean = ["evaluate", "--data", str(shop_dir), "--model", "popularity", "--no-tune", "--on-bad-rows", "skip"]
    code, out = run(*clean)
    assert code == 0 and "listed in" not in out, out
    assert not (tmp_path / "recs-skipped-rows.csv").exists()  # nothing skipped, no report
    with (shop_dir / "events.csv").open("a", encoding="utf-8") as handle:
        handle.writelines(f"u9,GONE{i},2026-01-0{1 + i % 9}\n" for i in range(25))
    code, out = run(*clean)
    assert code == 0, out
    assert "events.csv: 25 rows dropped (event for unknown item)" in out
    assert out.count("-> row dropped") == 20 and "... and 5 more" in out
    assert "listed in recs-skipped-rows.csv" in out
    assert len((tmp_path / "recs-skipped-rows.csv").read_text().splitlines()) == 26


@pytest.mark.parametrize("command", ["data-profile", "evaluate", "benchmark", "train", "train-ranker", "train-bundler"])
def test_every_command_loading_a_shop_prints_the_skip_report(
    command: str, shop_dir: Path, tmp_path: Path, trained_artifact: Path
) -> None:
    """Every event names an unknown item: `skip` drops them all, every command lists them, and
    those that need events stop before any work (train-bundler warns: bundles alone may do)."""
    model = Path(shutil.copytree(trained_artifact, tmp_path / "trained"))  # the model is checked before the data
    (shop_dir / "bundles.csv").unlink()
    _edit(shop_dir / "items.csv", "M1,Ceramic", "MUG,Ceramic")
    lines = (shop_dir / "events.csv").read_text().splitlines()
    (shop_dir / "events.csv").write_text("\n".join([lines[0], *(line.replace(",C1,", ",M1,") for line in lines[1:] if ",M1," in line or ",C1," in line)]) + "\n")
    config = tmp_path / "recs.toml"
    config.write_text("")
    args = {
        "data-profile": ["data", "profile", "--user", "u1"],
        "evaluate": ["evaluate", "--model", "popularity", "--no-tune"],
        "benchmark": ["benchmark", "--out", str(tmp_path / "b.json")],
        "train": ["train", "--out", str(tmp_path / "model")],
        "train-ranker": ["train-ranker", "--model", str(model), "--config", str(config)],
        "train-bundler": ["train-bundler", "--model", str(model), "--config", str(config)],
    }[command]
    report = tmp_path / "skipped.csv"
    code, out = run(*args, "--data", str(shop_dir), "--on-bad-rows", "skip", "--skip-report", str(report))
    assert "events.csv: 7 rows dropped (event for unknown item)" in out, out
    assert "events.csv row 1, column item_id: item 'M1' is not in the catalog -> row dropped" in out
    assert f"listed in {report}" in out and len(report.read_text().splitlines()) == 8
    if command == "train-bundler":
        assert "warning: events.csv: no events left: all 7 rows were dropped (7 event for unknown item)" in out
        assert code == 2, out  # then nothing to learn from
    else:
        assert code == 2, out
        assert "error: events.csv: no events left: all 7 rows were dropped (7 event for unknown item)" in out
    assert "Traceback" not in out and not (tmp_path / "model").exists()


@pytest.mark.parametrize("command", ["evaluate", "benchmark", "train", "train-ranker"])
def test_header_only_events_stop_a_command_that_learns_from_them(
    command: str, shop_dir: Path, tmp_path: Path, trained_artifact: Path
) -> None:
    model = Path(shutil.copytree(trained_artifact, tmp_path / "trained"))  # the model is checked before the data
    (shop_dir / "events.csv").write_text("user_id,item_id,timestamp,event\n")
    config = tmp_path / "recs.toml"
    config.write_text("")
    args = {
        "evaluate": ["evaluate", "--model", "popularity", "--no-tune"],
        "benchmark": ["benchmark", "--out", str(tmp_path / "b.json")],
        "train": ["train", "--out", str(tmp_path / "model")],
        "train-ranker": ["train-ranker", "--model", str(model), "--config", str(config)],
    }[command]
    code, out = run(*args, "--data", str(shop_dir))
    assert code == 2, out
    assert "events.csv: no events (the file has a header and no rows)" in out
    assert not (tmp_path / "model").exists()


def test_validate_refuses_a_header_only_catalog_and_warns_of_future_times(shop_dir: Path) -> None:
    _edit(shop_dir / "events.csv", "u4,M1,2026-01-10T08:00:00Z", "u4,M1,2099-01-10T08:00:00Z")
    code, out = run("data", "validate", str(shop_dir / "items.csv"), str(shop_dir / "events.csv"))
    assert code == 0, out
    assert "warning: events.csv: 1 events have a timestamp in the future (latest 2099-01-10 08:00:00+00:00)" in out
    (shop_dir / "items.csv").write_text("item_id,title,price\n")
    code, out = run("data", "validate", str(shop_dir / "items.csv"))
    assert code == 2 and "no problems found" not in out
    assert "items.csv: no items (the file has a header and no rows)" in out


def test_on_bad_rows_and_skip_report_values_are_checked(shop_dir: Path) -> None:
    code, out = run("evaluate", "--data", str(shop_dir), "--model", "popularity", "--on-bad-rows", "drop")
    assert code == 2 and "--on-bad-rows must be error or skip, got 'drop'" in out
    code, out = run("evaluate", "--data", str(shop_dir), "--model", "popularity", "--skip-report", "skipped.txt")
    assert code == 2 and "must be a .csv file" in out


def test_commands_load_shops_only_through_load_shop() -> None:
    """One helper prints the skip report; a command calling load_dataset itself would print none."""
    import inspect
    import pkgutil

    import recs.cli

    source = "".join(inspect.getsource(__import__(f"recs.cli.{m.name}", fromlist=["_"]))
                     for m in pkgutil.iter_modules(recs.cli.__path__) if m.name != "__main__")
    assert source.count("load_dataset(") == 1 and source.count("load_shop(") >= 7


def test_an_error_quoting_brackets_from_the_data_is_one_line(shop_dir: Path) -> None:
    _edit(shop_dir / "items.csv", "T1,", "[/x],")
    _edit(shop_dir / "items.csv", "T2,", "[/x],")
    code, out = run("evaluate", "--data", str(shop_dir), "--model", "popularity")
    assert code == 2 and "duplicate item_id '[/x]'" in out and "Traceback" not in out

def test_query_says_degraded_no_match_and_warns_in_one_line(ranked_artifact: Path) -> None:
    """Issue 13, finding 7 and 1: a missed time budget is shown, an empty result says why, the
    `warn` policy is one clean line, bad arguments are one-line errors."""
    import polars as pl

    events = pl.read_parquet(ranked_artifact / "events.parquet").filter(pl.col("event") == "purchase")
    user = str(events["user_id"][0])
    model = str(ranked_artifact)
    code, out = run("query", "--model", model, "--user", user, "--rerank-top", "10", "--time-budget-ms", "0")
    assert code == 0 and "degraded" in out, out
    result = runner.invoke(app, ["query", "--model", model, "--user", user, "--rerank-top", "10", "--time-budget-ms", "0", "--json"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 10
    assert "degraded" in result.stderr
    code, out = run("query", "--model", model, "--user", user, "--price-min", "1000000")
    assert code == 0 and "no item matches the filters" in out, out
    code, out = run("query", "--model", model, "--user", "ghost", "--unknown-user", "warn", "--k", "3")
    assert code == 0 and "warning: unknown user 'ghost'" in out, out
    assert "UserWarning" not in out and "warnings.warn" not in out
    code, out = run("query", "--model", model, "--user", user, "--category", "No Such Aisle")
    assert code == 2 and "category 'No Such Aisle' is not in the catalog" in out
    code, out = run("query", "--model", model, "--user", user, "--unknown-user", "bogus")
    assert code == 2 and "--unknown-user must be one of raise, warn, fallback" in out
    for args in (("--price-min", "100", "--price-max", "10"), ("--price-min", "nan")):
        code, out = run("query", "--model", model, "--user", user, *args)
        assert code == 2 and "price_min" in out and "Traceback" not in out


def _no_data_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import recs.data.load

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the data was read before the outputs were checked")

    monkeypatch.setattr(recs.data.load, "load_dataset", refuse)


def test_outputs_are_checked_before_any_work(shop_dir: Path, trained_artifact: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`recs train --out FILE` trained for minutes and then refused; `evaluate --out FILE/x.json` and
    `export-vectors --to npy --out FILE` ended in a traceback (FileExistsError) after the work."""
    _no_data_loading(monkeypatch)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cases = [
        (("train", "--data", str(shop_dir), "--out", str(a_file)), "not a folder"),
        (("train", "--data", str(shop_dir), "--out", str(shop_dir)), "not an artifact"),
        (("export", "--model", str(trained_artifact), "--out", str(shop_dir)), "not an artifact"),
        (("evaluate", "--data", str(shop_dir), "--out", str(a_file / "x.json")), "is a file"),
        (("benchmark", "--data", str(shop_dir), "--out", str(tmp_path)), ".json"),
        (("export-vectors", "--model", str(trained_artifact), "--to", "npy", "--out", str(a_file)), "is a file"),
        (("export-vectors", "--model", str(trained_artifact), "--to", "parquet", "--out", str(tmp_path)), "is a folder"),
    ]
    for args, words in cases:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output and "Traceback" not in result.output, (args, result.output)
    assert a_file.read_text() == "x" and sorted(p.name for p in shop_dir.iterdir()) == ["bundles.csv", "events.csv", "items.csv"]


def test_export_vectors_replaces_an_existing_parquet_file(trained_artifact: Path, tmp_path: Path) -> None:
    import polars as pl

    target = tmp_path / "vectors.parquet"
    target.write_text("an older export")
    code, out = run("export-vectors", "--model", str(trained_artifact), "--to", "parquet", "--out", str(target))
    assert code == 0, out
    assert pl.read_parquet(target).height == len(Engine.load(trained_artifact).retriever.catalog)


def _shop(folder: Path, source: Path, events: str, items: str | None = None) -> Path:
    folder.mkdir()
    (folder / "items.csv").write_text(items or (source / "items.csv").read_text())
    (folder / "events.csv").write_text(events)
    return folder


def test_shops_too_small_to_learn_from(shop_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """A one-item shop ended in `KeyError: 'ndcg@10'` (or saved untrained towers with exit 0); so
    did a shop without purchases. Each training command now refuses what it cannot learn from,
    before training, and trains (without early stopping) what it can."""
    events = (shop_dir / "events.csv").read_text().splitlines()
    header, rows = events[0], events[1:]
    one_item = _shop(tmp_path / "one-item", shop_dir, "\n".join([header, *[r for r in rows if ",C1," in r]]) + "\n",
                     items="item_id,title\nC1,Arabica Coffee Beans 1kg\n")
    one_user = _shop(tmp_path / "one-user", shop_dir, "\n".join([header, *[r for r in rows if r.startswith("u1,")]]) + "\n")
    firsts = {r.split(",")[0]: r for r in reversed(rows) if ",purchase," in r}
    one_each = _shop(tmp_path / "one-each", shop_dir, "\n".join([header, *firsts.values()]) + "\n")
    carts = _shop(tmp_path / "carts", shop_dir, "\n".join([header, *[r.replace(",purchase,", ",cart,") for r in rows]]) + "\n")
    train = ("train", "--model", str(tiny_model_dir), "--epochs", "1", "--out")
    for shop, words in ((one_item, "at least 2 items"), (one_user, "nothing to train"), (one_each, "nothing to train")):
        code, out = run(*train, str(tmp_path / "model"), "--data", str(shop))
        assert code == 2 and words in out and "Traceback" not in out, out
        assert not (tmp_path / "model").exists()
    code, out = run("evaluate", "--data", str(one_each), "--model", "popularity")
    assert code == 2 and "two purchase baskets" in out, out
    code, out = run("benchmark", "--data", str(one_item), "--out", str(tmp_path / "b.json"))
    assert code == 2 and "at least 2 items" in out, out
    # Carts only: the towers learn from carts; no purchase basket to validate on, so the last epoch is kept.
    code, out = run(*train, str(tmp_path / "model"), "--data", str(carts))
    assert code == 0 and "no validation users" in out, out
    code, out = run("train-ranker", "--model", str(tmp_path / "model"), "--data", str(carts))
    assert code == 2 and "two purchase baskets" in out, out
    code, out = run("train-ranker", "--model", str(tmp_path / "model"), "--data", str(one_item))
    assert code == 2 and "at least 2 items" in out, out


def test_train_ranker_says_what_it_removes(ranked_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    """`train-ranker --no-cross-encoder` deleted the existing cross-encoder without a word."""
    before = Engine.load(ranked_artifact).pipeline
    assert before.cross_encoder is not None and before.ranker is not None
    model = Path(shutil.copytree(ranked_artifact, tmp_path / "a"))
    code, out = run("train-ranker", "--model", str(model), "--data", str(small_demo_dir), "--no-cross-encoder")
    assert code == 0, out
    assert "removed the existing cross-encoder" in out and "without --no-cross-encoder" in out
    after = Engine.load(model).pipeline
    assert after.cross_encoder is None and after.ranker is not None
    model = Path(shutil.copytree(ranked_artifact, tmp_path / "b"))
    code, out = run("train-ranker", "--model", str(model), "--data", str(small_demo_dir), "--no-ranker", "--no-cross-encoder",
                    "--rerank-top", "0")
    assert code == 0, out
    assert "removed the existing learned ranker (--no-ranker)" in out and "removed the existing cross-encoder" in out
    assert Engine.load(model).pipeline.ranker is None


# --- the filesystem: one-line errors, locks, leftovers ----------------------------------------------


REPO = Path(__file__).resolve().parents[1]


def _beside(model: Path) -> list[str]:
    """Hidden entries and backups beside an artifact but its (empty, permanent) lock file."""
    return sorted(p.name for p in model.parent.iterdir() if p.name != model.name and not p.name.endswith(".lock"))


def test_a_file_size_limit_is_one_line_naming_the_artifact(trained_artifact: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a child process (Python ignores SIGXFSZ, so writes fail with EFBIG)."""
    import os
    import resource
    import subprocess
    import sys

    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    before = [r.item_id for r in Engine.load(model).recommend(user_id="U0001", k=5)]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = subprocess.run(
        [sys.executable, "-m", "recs.cli", "build-index", "--model", str(model)], capture_output=True, text=True,
        preexec_fn=limit, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"error: cannot write {model}: File too large (errno 27)" in output
    assert "Traceback" not in output
    assert [r.item_id for r in Engine.load(model).recommend(user_id="U0001", k=5)] == before  # the old one, whole
    assert _beside(model) == []


def test_an_unwritable_folder_is_one_line(trained_artifact: Path, tmp_path: Path, monkeypatch) -> None:
    """As root no folder is read-only: the refusal the kernel would give is simulated."""
    import tempfile

    def refused(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / ".x.tmp-abc"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    code, out = run("data", "demo", "--out", str(tmp_path / "shop"), "--scale", "0.05")
    assert code == 1 and f"error: cannot write {tmp_path / 'shop'}/" in out and "Permission denied (errno 13)" in out
    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    code, out = run("build-index", "--model", str(model))
    assert code == 1 and f"error: cannot write {model}: Permission denied (errno 13)" in out, out
    assert "Traceback" not in out


def test_outputs_onto_a_file_or_a_file_path_are_one_line(shop_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, out = run("evaluate", "--data", str(shop_dir), "--model", "popularity", "--k", "5", "--out", str(tmp_path / "file" / "r.json"))
    assert code == 2 and f"--out {tmp_path / 'file' / 'r.json'}: {tmp_path / 'file'} is a file, not a folder" in out, out


def test_train_refuses_a_bad_output_before_any_work(shop_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import recs.data.load

    def no_work(*args, **kwargs):
        raise AssertionError("the data was loaded before the output was checked")

    monkeypatch.setattr(recs.data.load, "load_dataset", no_work)
    (tmp_path / "taken.txt").write_text("x")
    code, out = run("train", "--data", str(shop_dir), "--out", str(tmp_path / "taken.txt"))
    assert code == 2 and "not a folder" in out, out
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep")
    code, out = run("train", "--data", str(shop_dir), "--out", str(tmp_path / "notes"))
    assert code == 2 and "not an artifact" in out, out


def test_a_second_writer_is_refused_while_readers_go_on(trained_artifact: Path, tmp_path: Path, monkeypatch) -> None:
    """Another process holds the artifact's lock (as a running `recs build-index` does)."""
    import os
    import subprocess
    import sys

    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from recs.artifacts import artifact_lock\nwith artifact_lock({str(model)!r}):\n"
                               "    print('held', flush=True)\n    input()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("RECS_LOCK_TIMEOUT", "0.2")
        for args in (["build-index", "--model", str(model)], ["train-ranker", "--model", str(model), "--data", str(tmp_path)]):
            code, out = run(*args)
            assert code == 5, out
            assert f"{model} is being written by another recs process (lock .model.lock); try again when it finishes" in out
        code, out = run("query", "--model", str(model), "--user", "U0001", "--k", "3", "--json")
        assert code == 0, out  # readers need no lock
    finally:
        holder.communicate("\n", timeout=60)
    code, out = run("build-index", "--model", str(model), "--kind", "flat")
    assert code == 0, out


def test_train_removes_its_work_folder_and_a_killed_run_leftovers(tiny_model_dir: Path, shop_dir: Path, tmp_path: Path, caplog) -> None:
    out_dir = tmp_path / "out" / "model"
    for name in (".model.tmp-killed", ".model.work"):  # what a `kill -9` of an earlier run leaves
        (out_dir.parent / name).mkdir(parents=True)
        (out_dir.parent / name / "blob.bin").write_bytes(b"x" * 1_000_000)
    with caplog.at_level("WARNING", logger="recs.io"):
        code, out = run("train", "--data", str(shop_dir), "--out", str(out_dir), "--model", str(tiny_model_dir),
                        "--epochs", "1", "--max-pairs", "32")
    assert code == 0, out
    removed = sorted(r.getMessage() for r in caplog.records)
    assert [m.split("/")[-1] for m in removed] == [".model.tmp-killed (1.0 MB) left by an interrupted run",
                                                  ".model.work (1.0 MB) left by an interrupted run"]
    assert _beside(out_dir) == []  # and no work folder of its own
    assert len(Engine.load(out_dir).recommend(user_id="u1", k=3)) == 3
