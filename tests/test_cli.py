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
