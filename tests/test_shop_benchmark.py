"""`recs benchmark`: the held-out protocol on a shop folder, engine beside every baseline, paired."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recs.cli import app
from recs.config import RecsConfig
from recs.errors import ConfigError
from recs.evaluation.baselines import BASELINES
from recs.evaluation.bundle_tasks import BUNDLE_TASKS
from recs.evaluation.stages import budgeted_config

runner = CliRunner()

# Tiny budgets: the test checks the protocol's plumbing, not the model's quality.
SMALL_CONFIG = """
[retrieval.train]
epochs = 1
batch_size = 32
max_pairs_per_epoch = 128
valid_users = 40
[ranking.cross_encoder]
epochs = 1
max_queries = 30
max_tokens = 32
[bundling.train]
epochs = 1
[bundling.item_model]
max_baskets = 30
"""


def test_benchmark_writes_results_with_engine_baselines_and_paired(
    tiny_model_dir: Path, small_demo_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "recs.toml"
    config.write_text(SMALL_CONFIG, encoding="utf-8")
    out = tmp_path / "results" / "bench.json"
    result = runner.invoke(app, ["benchmark", "--data", str(small_demo_dir), "--out", str(out), "--model", str(tiny_model_dir),
                                 "--config", str(config), "--max-minutes", "0.5", "--max-test-users", "60", "--no-progress",
                                 "--bundles"])
    assert result.exit_code == 0, result.output
    assert "| engine | all |" in result.output and "engine vs repeat:" in result.output
    assert "| engine | anchor_bundle |" in result.output and "precision" in result.output
    document = json.loads(out.read_text(encoding="utf-8"))
    rows = document["rows"]
    methods = {r["method"] for r in rows}
    assert {"engine", "two_tower", *BASELINES} <= methods
    assert {r["slice"] for r in rows if r["method"] == "engine"} == {"all", "new_to_user", "cold_items", "discover", *BUNDLE_TASKS}
    bundle_rows = [r for r in rows if r["slice"] in BUNDLE_TASKS]
    assert {r["method"] for r in bundle_rows} == {"engine", "cooc", "item_similarity", "tifu_knn", "repeat", "untrained"}
    assert all(r["metrics"]["constraint_satisfaction"] == 1.0 for r in bundle_rows)
    assert all(r["metrics"]["users"] <= 60 for r in rows)
    assert {p["reference"] for p in document["paired"]} == set(BASELINES)
    for paired in document["paired"]:
        assert paired["method"] == "engine" and paired["users"] > 0
        assert paired["ci_low"] <= paired["delta"] <= paired["ci_high"]
    assert document["protocol"]["max_minutes"] == 0.5
    assert "Paired per-user" in (out.parent / "bench.md").read_text(encoding="utf-8")
    assert (out.parent / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_benchmark_bad_input_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["benchmark", "--data", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "data folder not found" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["benchmark", "--data", str(tmp_path), "--out", str(tmp_path / "x.txt")])
    assert result.exit_code == 2 and "--out must be a .json file" in result.output


def test_budget_is_split_between_towers_and_cross_encoder() -> None:
    config = budgeted_config(RecsConfig(), 8.0)
    assert config.retrieval.train.max_minutes == 4.0 and config.ranking.cross_encoder.max_minutes == 2.0
    assert budgeted_config(RecsConfig(), None) == RecsConfig()
    with pytest.raises(ConfigError):
        budgeted_config(RecsConfig(), 0)


def test_the_demo_benchmark_config_parses() -> None:
    # `make demo` passes it to `recs benchmark`: a field renamed in RecsConfig must fail here, not there.
    from pathlib import Path

    from recs.config import load_config

    load_config(Path(__file__).resolve().parents[1] / "benchmarks" / "demo.toml")
