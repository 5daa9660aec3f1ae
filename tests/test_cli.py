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
    assert code == 1 and f"cannot write {tmp_path / 'file' / 'r.json'}: File exists (errno 17) at {tmp_path / 'file'}" in out, out


def test_train_refuses_a_bad_output_before_any_work(shop_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import recs.data.load

    def no_work(*args, **kwargs):
        raise AssertionError("the data was loaded before the output was checked")

    monkeypatch.setattr(recs.data.load, "load_dataset", no_work)
    (tmp_path / "taken.txt").write_text("x")
    code, out = run("train", "--data", str(shop_dir), "--out", str(tmp_path / "taken.txt"))
    assert code == 4 and "not a folder" in out, out
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep")
    code, out = run("train", "--data", str(shop_dir), "--out", str(tmp_path / "notes"))
    assert code == 4 and "not an artifact" in out, out


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
