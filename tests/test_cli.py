"""The CLI through typer's test runner: commands work, errors are one line with an exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from recs.cli import app
from recs.serving import Engine

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


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
