"""benchmarks/faults.py: its machinery (kill a process group, stale data, answers) and one real kill."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `benchmarks` is a folder beside `recs`, not an installed package
    sys.path.insert(0, str(_ROOT))

from benchmarks import faults  # noqa: E402


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return "\nState:\tZ" not in state


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_kill_reaches_the_whole_process_group(tmp_path: Path) -> None:
    # The child starts a grandchild (as a worker would) and both must die with the SIGKILL.
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "child.log"
    result = faults.run_child([sys.executable, "-c", script], dict(os.environ), log, kill_after=1.5)
    assert result.killed and result.returncode is None
    assert result.seconds < 30
    grandchild = int(log.read_text().split()[0])
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_a_child_that_exits_first_is_not_killed(tmp_path: Path) -> None:
    result = faults.run_child([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path / "log", kill_after=30)
    assert not result.killed and result.returncode == 3


def test_stale_entries_and_clear_leftovers(tmp_path: Path) -> None:
    target, tmp = tmp_path / "model", tmp_path / "tmp"
    _write(target / "manifest.json", 7)  # the artifact itself is not stale
    _write(tmp_path / ".model.tmp-abc" / "a.bin", 10)
    _write(tmp_path / "model.bak-0001" / "manifest.json", 20)
    _write(tmp_path / ".model.work" / "ckpt" / "w.bin", 30)
    _write(tmp_path / ".model.bundler-work" / "x", 4)
    _write(tmp_path / ".model.lock", 0)  # a writers' lock is fine
    _write(tmp_path / "modelx" / "f", 99)  # another folder
    _write(tmp / "recs-export-1" / "g.onnx", 5)
    _write(tmp / "unrelated" / "h", 6)

    found = {Path(p).name: n for p, n in faults.stale_entries(target, tmp).items()}
    assert found == {".model.tmp-abc": 10, "model.bak-0001": 20, ".model.work": 30, ".model.bundler-work": 4, "recs-export-1": 5}

    faults.clear_leftovers(target, tmp)
    assert faults.stale_entries(target, tmp) == {}
    assert (target / "manifest.json").is_file() and (tmp_path / ".model.lock").is_file()
    assert (tmp_path / "modelx" / "f").is_file() and (tmp / "unrelated" / "h").is_file()


def test_a_backup_is_kept_while_the_folder_is_missing(tmp_path: Path) -> None:
    # Between the two renames of a swap the backup is the only copy: never delete it then.
    _write(tmp_path / "model.bak-0001" / "manifest.json", 3)
    faults.clear_leftovers(tmp_path / "model", tmp_path / "tmp")
    assert (tmp_path / "model.bak-0001" / "manifest.json").is_file()


def test_same_answers() -> None:
    old = {"u1": [("a", 0.5), ("b", 0.25)]}
    assert faults.same_answers(old, {"u1": [("a", 0.500001), ("b", 0.25)]})
    assert not faults.same_answers(old, {"u1": [("a", 0.51), ("b", 0.25)]})
    assert not faults.same_answers(old, {"u1": [("b", 0.5), ("a", 0.25)]})
    assert not faults.same_answers(old, {"u2": [("a", 0.5), ("b", 0.25)]})
    assert not faults.same_answers(old, None)


def test_base_steps_and_arguments() -> None:
    assert faults.base_steps(["build-index"]) == ["train"]
    assert faults.base_steps(["export"]) == ["train", "train-ranker", "train-bundler", "export"]
    args = faults.parse_args(["--commands", "train-bundler,build-index", "--kills-per-command", "2"])
    assert args.commands == ["train-bundler", "build-index"] and args.kills_per_command == 2
    with pytest.raises(SystemExit):
        faults.parse_args(["--commands", "train"])
    with pytest.raises(SystemExit):
        faults.parse_args(["--kills-per-command", "0"])


def test_refuses_to_empty_a_folder_it_did_not_make(tmp_path: Path) -> None:
    _write(tmp_path / "mine" / "keep.txt", 1)
    with pytest.raises(SystemExit, match="refusing"):
        faults.prepare_work(tmp_path / "mine")
    assert (tmp_path / "mine" / "keep.txt").is_file()
    faults.prepare_work(tmp_path / "new")
    faults.prepare_work(tmp_path / "new")  # its own folder: emptied again
    assert [p.name for p in (tmp_path / "new").iterdir()] == [faults.MARKER]


@pytest.mark.slow
def test_one_kill_of_build_index(tmp_path: Path) -> None:
    """The whole loop once: base artifact, a timed run, one kill, checks, next run, results."""
    out = tmp_path / "results"
    code = faults.main(["--commands", "build-index", "--kills-per-command", "1", "--work", str(tmp_path / "work"),
                        "--out", str(out), "--seed", "3"])
    assert code == 0
    document = json.loads((out / "faults.json").read_text())
    (row,) = document["rows"]
    assert (row["dataset"], row["method"], row["slice"]) == ("demo", "build-index", "all")
    metrics = row["metrics"]
    assert metrics["kills"] == 1 and metrics["loadable_after"] == 1 and metrics["answers_unchanged"] == 1
    assert metrics["next_run_ok"] == 1
    assert {"stale_bytes_after_next_run", "killed_after_completion", "seconds_uninterrupted"} <= set(metrics)
    (kill,) = document["kills"]
    assert kill["command"] == "build-index" and kill["answers"] in ("old", "new")
    assert (out / "faults.md").is_file()
