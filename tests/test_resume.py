"""`recs train --resume-from ART`: the towers continue from ART's weights on the events after its
log (a shop folder's or an event store's), and a full new artifact is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from recs.artifacts import ArtifactWriter
from recs.cli import app
from recs.retrieval.pairs import TrainingExamples, UserState
from recs.retrieval.retriever import Retriever
from recs.serving import Engine
from recs.serving.eventstore import NewEvent, open_store
from recs.serving.resume import resume_examples

runner = CliRunner()
NEW_USERS = ("U0000", "U0001", "U0002", "U0003", "U0004")
NEW_ITEMS = ("N001", "N002", "N003")


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def flat(output: str) -> str:
    """The output with the console's line wrapping undone."""
    return " ".join(output.split())


def _shop_with_new_events(source: Path, target: Path, baskets: int = 2) -> Path:
    """A copy of the shop whose catalog gains NEW_ITEMS and whose log goes on: each of NEW_USERS
    buys `baskets` orders of new items after the log's end."""
    shop = Path(shutil.copytree(source, target))
    with (shop / "items.csv").open("a", encoding="utf-8") as handle:
        for n, item in enumerate(NEW_ITEMS):
            handle.write(f"{item},Moonlit Roasters Cold Brew Coffee Concentrate {n},New cold brew,Grocery > Coffee > Cold Brew,"
                         f"Moonlit Roasters,{8 + n}.50,true,2026-05-01\n")
    lines = []
    for u, user in enumerate(NEW_USERS):
        for b in range(baskets):
            when = f"2026-06-{1 + 7 * b:02d}T1{u}:00:00Z"
            for item in (NEW_ITEMS[b % 3], NEW_ITEMS[(b + 1) % 3]):
                lines.append(f"{user},{item},{when},purchase,R{u}{b},1\n")
    with (shop / "events.csv").open("a", encoding="utf-8") as handle:
        handle.writelines(lines)
    return shop


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory, trained_artifact: Path, small_demo_dir: Path) -> tuple[Path, Path, str]:
    """ART resumed for one short epoch on a shop with new events: (ART, OUT, the command's output)."""
    root = tmp_path_factory.mktemp("resume")
    shop = _shop_with_new_events(small_demo_dir, root / "shop")
    start = Path(shutil.copytree(trained_artifact, root / "start"))
    out = root / "resumed"
    code, output = run("train", "--resume-from", str(start), "--data", str(shop), "--out", str(out),
                       "--epochs", "1", "--max-pairs", "64")
    assert code == 0, output
    return start, out, output


def test_resume_continues_the_towers_on_the_new_events(resumed: tuple[Path, Path, str]) -> None:
    start, out, output = resumed
    assert "20 new events of 5 user(s)" in flat(output) and "3 new item(s)" in flat(output)
    assert "training pairs: 10 new + 5 replayed" in output
    old, new = load_file(str(start / "towers.safetensors")), load_file(str(out / "towers.safetensors"))
    assert old.keys() == new.keys()
    assert any(not np.array_equal(old[k], new[k]) for k in old)  # fine-tuned further, from the same shapes
    retriever = Retriever.load(out)
    assert set(NEW_ITEMS) <= set(retriever.catalog.item_ids)
    log = pl.read_parquet(out / "events.parquet")
    before = pl.read_parquet(start / "events.parquet")
    assert log.height == before.height + 20
    assert log.filter(pl.col("item_id").is_in(list(NEW_ITEMS)))["user_id"].unique().sort().to_list() == list(NEW_USERS)
    report = json.loads((out / "train_report.json").read_text())
    assert report["pairs"] > 0 and report["steps"] >= 1
    config = json.loads((out / "recs_config.json").read_text())
    assert config["retrieval"]["train"]["epochs"] == 1 and config["retrieval"]["train"]["max_pairs_per_epoch"] == 64


def test_the_resumed_model_answers_from_the_new_events(resumed: tuple[Path, Path, str]) -> None:
    _, out, _ = resumed
    engine = Engine.load(out)
    context = engine.retriever.context(user_id="U0000")
    bought = {engine.retriever.catalog.item_ids[r] for r in context.history.rows.tolist()}
    assert {"N001", "N002", "N003"} <= bought  # the history holds the new baskets
    assert "Cold Brew" in context.state.text
    results = engine.recommend(user_id="U0000", k=5, exclude_bought=True)
    assert results and not {r.item_id for r in results} & set(NEW_ITEMS)
    # A user who has not bought the new items may now be offered them (they are indexed).
    ids, _ = engine.retriever.index.search(engine.retriever.item_vectors[[engine.retriever.catalog.row_of["N001"]]], 3)
    assert "N001" in list(ids[0])


def test_resume_in_place_writes_a_new_version(trained_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    shop = _shop_with_new_events(small_demo_dir, tmp_path / "shop")
    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    created = json.loads((model / "manifest.json").read_text())["created"]
    code, out = run("train", "--resume-from", str(model), "--data", str(shop), "--out", str(model), "--epochs", "1",
                    "--max-pairs", "32", "--replay", "0")
    assert code == 0, out
    assert "+ 0 replayed" in out
    assert json.loads((model / "manifest.json").read_text())["created"] != created
    assert pl.read_parquet(model / "events.parquet").filter(pl.col("item_id") == "N001").height > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".model.lock"]  # no work folder left
    # Resuming again on the same shop: nothing is new any more.
    code, out = run("train", "--resume-from", str(model), "--data", str(shop), "--out", str(model))
    assert code == 2 and "nothing new to learn from" in flat(out) and "Traceback" not in out


def test_resume_needs_new_events_and_new_pairs(trained_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = run("train", "--resume-from", str(trained_artifact), "--data", str(small_demo_dir), "--out", str(out))
    assert code == 2 and "no event given is new to the model" in flat(output)
    # One new basket per user: it is their held-out validation basket, so nothing is left to train on.
    shop = _shop_with_new_events(small_demo_dir, tmp_path / "shop", baskets=1)
    code, output = run("train", "--resume-from", str(trained_artifact), "--data", str(shop), "--out", str(out))
    assert code == 2 and "no new training pairs in 10 new events of 5 user(s)" in flat(output)
    assert output.startswith("error:") and "Traceback" not in output and not out.exists()


def test_resume_options_are_checked(trained_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    code, output = run("train", "--resume-from", str(trained_artifact), "--out", out)
    assert code == 2 and "give --data SHOP or --events STORE" in output
    code, output = run("train", "--resume-from", str(trained_artifact), "--data", str(small_demo_dir), "--out", out,
                       "--replay", "-1")
    assert code == 2 and "--replay must be between 0 and 100" in output
    code, output = run("train", "--resume-from", str(trained_artifact), "--data", str(small_demo_dir), "--out", out,
                       "--model", "x")
    assert code == 2 and "--model" in output
    code, output = run("train", "--out", out)
    assert code == 2 and "give --data" in output


def test_resume_from_an_onnx_export_is_refused(tmp_path: Path, small_demo_dir: Path) -> None:
    export = tmp_path / "onnx"
    with ArtifactWriter(export) as writer:  # what `recs export` marks its folder with
        writer.write_json("onnx/spec.json", {})
        writer.add_component("onnx", "onnx", files=["onnx/spec.json"])
    code, output = run("train", "--resume-from", str(export), "--data", str(small_demo_dir), "--out", str(tmp_path / "out"))
    assert code == 4, output
    assert "is an ONNX export" in flat(output) and "resume from the torch artifact it was exported from" in flat(output)
    assert output.startswith("error:") and "Traceback" not in output


def test_replay_samples_old_pairs_only() -> None:
    states = [UserState("", [0]) for _ in range(4)]
    examples = TrainingExamples(
        states=states, pair_state=np.array([0, 0, 1, 2, 3, 3]), pair_item=np.arange(6),
        basket_items=[frozenset()] * 4, target_times=np.array([10.0, 20.0, 30.0, 40.0]),
    )
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(25.0, UTC)
    chosen, n_new, n_replay = resume_examples(examples, since, replay=0.5, seed=0)
    assert (n_new, n_replay) == (3, 2)  # pairs of states 2 and 3 are new; round(1.5) old ones replayed
    assert {3, 4, 5} <= set(chosen.pair_item.tolist()) and len(chosen) == 5
    chosen, _, n_replay = resume_examples(examples, since, replay=10.0, seed=0)
    assert n_replay == 3 and len(chosen) == 6  # never more than there are


def test_resume_retrains_the_stages_that_read_the_towers(ranked_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    """The ranking stage and the set scorer were trained on the old towers' scores and vectors:
    the resumed artifact has them retrained, not stale, and nothing else is lost."""
    shop = _shop_with_new_events(small_demo_dir, tmp_path / "shop")
    model = Path(shutil.copytree(ranked_artifact, tmp_path / "model"))
    code, output = run("train-bundler", "--model", str(model), "--data", str(small_demo_dir), "--epochs", "1")
    assert code == 0, output
    config = tmp_path / "recs.toml"
    config.write_text("[ranking.cross_encoder]\nepochs = 1\nmax_queries = 40\nmax_tokens = 64\n", encoding="utf-8")
    out = tmp_path / "out"
    code, output = run("train", "--resume-from", str(model), "--data", str(shop), "--out", str(out), "--epochs", "1",
                       "--max-pairs", "32", "--config", str(config))
    assert code == 0, output
    assert "retrained the ranking stage" in output and "retrained the set scorer" in output
    before, after = json.loads((model / "manifest.json").read_text()), json.loads((out / "manifest.json").read_text())
    assert set(after["components"]) == set(before["components"])
    for name in ("ranker", "cross_encoder", "set_scorer"):
        files = before["components"][name]["files"]
        assert any(before["files"][f] != after["files"][f] for f in files), name
    assert json.loads((out / "set_scorer/item_ids.json").read_text())[-3:] == list(NEW_ITEMS)
    engine = Engine.load(out)
    assert engine.pipeline.ranker is not None and engine.pipeline.cross_encoder is not None
    assert engine.recommend(user_id="U0001", k=5)
    assert engine.bundle("U0001", items=["N001"], size=(2, 3), n=1)


def test_resume_from_the_event_store(trained_artifact: Path, tmp_path: Path) -> None:
    """`--events STORE`: the store's events after the model's marks are the new ones (the catalog is
    the model's); a user with a pending forget request leaves the log; the new artifact records the
    store's seqs it holds, so that a service does not replay them again."""
    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    start = Retriever.load(model)
    end = start.events["timestamp"].max().timestamp()
    forgotten = start.events["user_id"][-1]
    store_path = tmp_path / "model.events.sqlite"
    store = open_store(store_path)
    bought = start.events.filter(pl.col("event") == "purchase")
    events = []
    for u, user in enumerate(NEW_USERS):
        mine = set(bought.filter(pl.col("user_id") == user)["item_id"].to_list())
        fresh = [i for i in start.catalog.item_ids if i not in mine][u * 4: u * 4 + 4]
        for b in range(2):
            events += [NewEvent(user, item, "purchase", end + 86400 * (b + 1) + u, f"S{u}{b}") for item in fresh[2 * b: 2 * b + 2]]
    last = store.append(events)
    assert store.forget(forgotten) == 0  # nothing of theirs in the store: the request is what counts
    store.close()
    out = tmp_path / "out"
    code, output = run("train", "--resume-from", str(model), "--events", str(store_path), "--out", str(out),
                       "--epochs", "1", "--max-pairs", "32")
    assert code == 0, output
    assert "20 new events of 5 user(s)" in flat(output) and "training pairs: 10 new" in output
    resumed = Retriever.load(out)
    assert resumed.store_marks["events"] == last and resumed.store_marks["forgets"] >= 1
    assert resumed.events.height == start.events.height + 20 - int((start.events["user_id"] == forgotten).sum())
    assert forgotten not in set(resumed.events["user_id"].to_list())
    rows = Engine.load(out).retriever.context(user_id="U0001").history.rows.tolist()
    assert {e.item_id for e in events if e.user_id == "U0001"} <= {resumed.catalog.item_ids[r] for r in rows}
    # Early stopping as in `recs train`: the start's weights are kept unless an epoch beat them on validation.
    old, new = load_file(str(model / "towers.safetensors")), load_file(str(out / "towers.safetensors"))
    kept = json.loads((out / "train_report.json").read_text())["best_epoch"] == 0
    assert kept == all(np.array_equal(old[k], new[k]) for k in old)
    assert kept == ("the towers stay those of" in flat(output))
    store = open_store(store_path)
    assert [u for _, u in store.forgets()] == [forgotten]  # ART still holds them: its next refresh honours it
    store.close()
    # Nothing after the new artifact's marks: nothing to resume on.
    code, output = run("train", "--resume-from", str(out), "--events", str(store_path), "--out", str(out))
    assert code == 2 and "nothing new to learn from" in flat(output)
    code, output = run("train", "--resume-from", str(model), "--events", str(tmp_path / "none.sqlite"), "--out", str(out))
    assert code == 2 and "no event store there" in flat(output)
