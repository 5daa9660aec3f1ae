"""recs.io, the one atomic-write helper: old-or-new after a crash, no temp files left, modes that
follow the umask, folders swapped whole, checkpoints replaced as one unit."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs import io
from recs.io import (
    BACKUP_INFIX,
    atomic_replace_dir,
    atomic_write_bytes,
    atomic_write_file,
    atomic_write_text,
    restore_dir,
)
from tests.crash import fail_replace_on

RECS = Path(io.__file__).parent


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


# --- files ----------------------------------------------------------------------------------


def test_write_text_and_bytes_create_parents_and_return_the_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.json"
    assert atomic_write_text(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert atomic_write_bytes(target, b"\x00\x01") == target
    assert target.read_bytes() == b"\x00\x01"
    assert _names(target.parent) == ["report.json"]


def test_write_fn_gets_a_temp_path_beside_the_target_with_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "items.parquet"
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.exists() and tmp != target
        pl.DataFrame({"x": [1, 2]}).write_parquet(tmp)

    atomic_write_file(target, write)
    assert seen[0].parent == tmp_path and seen[0].suffix == ".parquet" and seen[0].name.startswith(".")
    assert pl.read_parquet(target)["x"].to_list() == [1, 2]
    assert _names(tmp_path) == ["items.parquet"]


def test_failed_rename_keeps_the_old_file_and_removes_the_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.txt"
    atomic_write_text(target, "old")
    fail_replace_on(monkeypatch, {1})
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["x.txt"]


@pytest.mark.parametrize("existing", [True, False])
def test_failing_writer_keeps_the_old_file_or_none(tmp_path: Path, existing: bool) -> None:
    target = tmp_path / "vectors.npy"
    if existing:
        atomic_write_file(target, lambda tmp: np.save(tmp, np.arange(3)))

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"\x93NUMPY half")
        raise KeyboardInterrupt  # even a BaseException cleans up

    with pytest.raises(KeyboardInterrupt):
        atomic_write_file(target, half_then_crash)
    if existing:
        np.testing.assert_array_equal(np.load(target), np.arange(3))
        assert _names(tmp_path) == ["vectors.npy"]
    else:
        assert _names(tmp_path) == []


def test_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(io, "fsync_file", lambda p: events.append(f"file:{Path(p).parent == tmp_path}"))
    monkeypatch.setattr(io, "fsync_dir", lambda p: events.append(f"dir:{Path(p) == tmp_path}"))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "f.txt", "x")
    assert events == ["file:True", "replace", "dir:True"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_final_files_and_folders_follow_the_umask(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    f = atomic_write_text(tmp_path / "f.txt", "x")
    g = atomic_write_file(tmp_path / "g.bin", lambda tmp: tmp.write_bytes(b"x"))
    assert _mode(f) == _mode(g) == 0o666 & ~mask  # not mkstemp's 0600
    d = atomic_replace_dir(tmp_path / "d", lambda tmp: (tmp / "a.txt").write_text("a"))
    assert _mode(d) == 0o777 & ~mask  # not mkdtemp's 0700
    assert _mode(d / "a.txt") == 0o666 & ~mask


# --- folders ----------------------------------------------------------------------------------


def _fill(version: str):
    def fill(tmp: Path) -> None:
        (tmp / "sub").mkdir()
        (tmp / "a.txt").write_text(version)
        (tmp / "sub" / "b.txt").write_text(version)
        if version == "v1":
            (tmp / "only-in-v1.txt").write_text(version)

    return fill


def _version(folder: Path) -> str:
    a, b = (folder / "a.txt").read_text(), (folder / "sub" / "b.txt").read_text()
    assert a == b, "a folder mixing two versions"
    return a


def test_replace_dir_swaps_the_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    assert atomic_replace_dir(target, _fill("v1")) == target
    assert _version(target) == "v1"
    atomic_replace_dir(target, _fill("v2"))
    assert _version(target) == "v2"
    assert not (target / "only-in-v1.txt").exists()  # replaced, not merged
    assert _names(tmp_path) == ["model"]  # no temp folder, no backup


def test_failing_fill_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    atomic_replace_dir(target, _fill("v1"))

    def crash(tmp: Path) -> None:
        (tmp / "a.txt").write_text("v2")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_replace_dir(target, crash)
    assert _version(target) == "v1"
    assert _names(tmp_path) == ["model"]


def test_failed_second_rename_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model"
    atomic_replace_dir(target, _fill("v1"))
    fail_replace_on(monkeypatch, {2})  # old aside works, new in fails
    with pytest.raises(OSError, match="simulated crash"):
        atomic_replace_dir(target, _fill("v2"))
    monkeypatch.undo()
    assert _version(target) == "v1"
    assert _names(tmp_path) == ["model"]


def test_crash_between_the_renames_is_restored_by_restore_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model"
    atomic_replace_dir(target, _fill("v1"))
    fail_replace_on(monkeypatch, {2, 3})  # new in fails and so does putting the old one back
    with pytest.raises(OSError, match="simulated crash"):
        atomic_replace_dir(target, _fill("v2"))
    monkeypatch.undo()
    assert not target.exists()
    [backup] = _names(tmp_path)
    assert backup.startswith("model" + BACKUP_INFIX)
    assert restore_dir(target) is True
    assert _version(target) == "v1"
    assert _names(tmp_path) == ["model"]
    atomic_replace_dir(target, _fill("v3"))
    assert _version(target) == "v3"


def test_restore_dir_takes_the_newest_complete_backup(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    assert restore_dir(target) is False  # nothing to restore
    for stamp, complete in (("01", True), ("02", True), ("03", False)):
        backup = tmp_path / f"ckpt{BACKUP_INFIX}{stamp}"
        backup.mkdir()
        (backup / "stamp").write_text(stamp)
        if complete:
            (backup / "state.json").write_text("{}")
    assert restore_dir(target, complete=lambda p: (p / "state.json").is_file())
    assert (target / "stamp").read_text() == "02"
    assert restore_dir(target) is True  # exists: nothing happens
    assert (target / "stamp").read_text() == "02"


def test_replace_dir_replaces_a_file_too(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("a file where the folder goes")
    atomic_replace_dir(target, _fill("v1"))
    assert _version(target) == "v1"
    assert _names(tmp_path) == ["model"]


# --- checkpoints: one unit ------------------------------------------------------------------------


def _trained(seed: int):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    return model, optimizer


def _fresh():
    import torch

    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def test_checkpoint_round_trip_and_replacement(tmp_path: Path) -> None:
    import torch

    from recs.retrieval.checkpoint import (
        has_training_state,
        load_training_state,
        save_training_state,
    )

    folder = tmp_path / "work" / "checkpoint"
    assert not has_training_state(folder)
    m1, o1 = _trained(1)
    save_training_state(folder, m1, o1, {"epoch": 1})
    m2, o2 = _trained(2)
    save_training_state(folder, m2, o2, {"epoch": 2})
    assert _names(folder.parent) == ["checkpoint"]
    model, optimizer = _fresh()
    assert has_training_state(folder)
    assert load_training_state(folder, model, optimizer)["epoch"] == 2
    torch.testing.assert_close(model.weight, m2.weight)
    torch.testing.assert_close(optimizer.state_dict()["state"][0]["exp_avg"], o2.state_dict()["state"][0]["exp_avg"])


def _assert_epoch_one(folder: Path, m1) -> None:
    import torch

    from recs.retrieval.checkpoint import has_training_state, load_training_state

    assert has_training_state(folder)
    model, optimizer = _fresh()
    meta = load_training_state(folder, model, optimizer)
    assert meta["epoch"] == 1
    torch.testing.assert_close(model.weight, m1.weight)  # the model of the same checkpoint


def test_checkpoint_failing_half_way_leaves_the_old_one_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recs.retrieval import checkpoint
    from recs.retrieval.checkpoint import save_training_state

    folder = tmp_path / "checkpoint"
    m1, o1 = _trained(1)
    save_training_state(folder, m1, o1, {"epoch": 1})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = checkpoint.save_file
    calls = {"n": 0}

    def crash_on_optimizer(tensors, path, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the model file is written, the optimizer file is not
            raise OSError("disk full")
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(checkpoint, "save_file", crash_on_optimizer)
    m2, o2 = _trained(2)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(folder, m2, o2, {"epoch": 2})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # not one file replaced
    assert _names(tmp_path) == ["checkpoint"]
    _assert_epoch_one(folder, m1)


def test_checkpoint_crash_between_renames_resumes_from_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recs.retrieval.checkpoint import save_training_state

    folder = tmp_path / "checkpoint"
    m1, o1 = _trained(1)
    save_training_state(folder, m1, o1, {"epoch": 1})
    fail_replace_on(monkeypatch, {2, 3})
    m2, o2 = _trained(2)
    with pytest.raises(OSError, match="simulated crash"):
        save_training_state(folder, m2, o2, {"epoch": 2})
    monkeypatch.undo()
    assert not folder.exists()  # the old checkpoint sits at checkpoint.bak-*
    _assert_epoch_one(folder, m1)  # has_training_state restores it
    assert _names(tmp_path) == ["checkpoint"]


# --- every writer goes through recs.io --------------------------------------------------------------


def test_no_module_but_recs_io_renames_fsyncs_or_makes_private_temp_files() -> None:
    pattern = re.compile(r"\bos\.(replace|rename|fsync)\(|\bmkstemp\(|\bmkdtemp\(")
    offenders = [
        f"{path.relative_to(RECS.parent)}:{n}"
        for path in sorted(RECS.rglob("*.py"))
        if path != RECS / "io.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == [], "write final files with recs.io (atomic_write_*, atomic_replace_dir)"
    assert not (RECS / "evaluation" / "_io.py").exists()


def test_writers_leave_modes_of_the_umask_and_no_temp_files(tmp_path: Path, umask) -> None:
    from recs.artifacts import ArtifactWriter
    from recs.data.demo import write_demo_shop
    from recs.data.io import write_table_atomic
    from recs.evaluation.report import write_results

    umask(0o027)
    with ArtifactWriter(tmp_path / "artifact") as w:
        w.write_json("a.json", {"x": 1})
        w.add_component("c", "ranker", files=["a.json"])
    assert _mode(tmp_path / "artifact") == 0o750
    assert _mode(tmp_path / "artifact" / "manifest.json") == 0o640
    shop = write_demo_shop(tmp_path / "shop", seed=0, scale=0.05)
    assert {_mode(p) for p in shop.values()} == {0o640}
    table = write_table_atomic(pl.DataFrame({"a": [1]}), tmp_path / "t" / "x.parquet")
    assert _mode(table) == 0o640
    json_path, md_path = write_results("r", [], tmp_path / "results")
    assert _mode(json_path) == _mode(md_path) == 0o640
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or BACKUP_INFIX in p.name]
    # The writer lock's file stays (empty): removing it would let two writers lock two inodes.
    assert [p.name for p in leftovers] == [".artifact.lock"]
    assert (tmp_path / ".artifact.lock").stat().st_size == 0


# --- storage failures name the target ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (OSError(27, "File too large"), 27),  # Python's own write
        (RuntimeError("parquet: underlying IO error: File too large (os error 27)"), 27),  # polars, safetensors
        (RuntimeError("write error in x.faiss: 9955 != 320000 (No space left on device)"), 28),  # faiss
        (PermissionError(13, "Permission denied"), 13),
    ],
)
def test_a_failed_write_names_the_target_and_the_reason(tmp_path: Path, raised: Exception, code: int) -> None:
    def write(tmp: Path) -> None:
        raise raised

    target = tmp_path / "out" / "table.parquet"
    with pytest.raises(io.PathError) as caught:
        atomic_write_file(target, write)
    assert caught.value.errno == code and caught.value.filename == str(target)
    assert str(caught.value) == f"cannot write {target}: {os.strerror(code)} (errno {code})"
    assert _names(target.parent) == []  # the temp file is gone


def test_other_failures_pass_through_unchanged(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad value"):
        atomic_write_file(tmp_path / "a.txt", lambda tmp: (_ for _ in ()).throw(ValueError("bad value")))
    elsewhere = FileNotFoundError(2, "No such file or directory", "/data/input.csv")
    with pytest.raises(FileNotFoundError) as caught:
        atomic_replace_dir(tmp_path / "d", lambda tmp: (_ for _ in ()).throw(elsewhere))
    assert caught.value is elsewhere  # an error about another path names that path itself


def test_a_short_write_at_the_file_size_limit_is_diagnosed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy reports a write cut short by RLIMIT_FSIZE without an errno: the temp file's size tells."""
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda what: (100, 100))

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"x" * 100)
        raise OSError("1000 requested and 100 written")

    with pytest.raises(io.PathError, match=r"File too large \(errno 27\)"):
        atomic_write_file(tmp_path / "a.npy", write)


def test_describe_os_error_names_the_path_and_the_errno() -> None:
    assert io.describe_os_error(FileExistsError(17, "File exists", "/x/v.parquet")) == (
        "cannot write /x/v.parquet: File exists (errno 17)"
    )
    assert io.describe_os_error(NotADirectoryError(20, "Not a directory", "/x/file/r.json")) == (
        "cannot access /x/file/r.json: Not a directory (errno 20)"
    )
    assert io.describe_os_error(OSError(28, "No space left on device")) == "No space left on device (errno 28)"


# --- modes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_a_swapped_folder_gets_the_umask_modes_whatever_wrote_it(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)

    def fill(tmp: Path) -> None:
        (tmp / "private.bin").write_bytes(b"x")
        os.chmod(tmp / "private.bin", 0o600)  # as a copy of a 0600 file or a private writer leaves it
        (tmp / "sub").mkdir(mode=0o700)

    d = atomic_replace_dir(tmp_path / "d", fill)
    assert _mode(d / "private.bin") == 0o666 & ~mask
    assert _mode(d / "sub") == _mode(d) == 0o777 & ~mask


# --- one writer at a time, and the leftovers of killed runs ----------------------------------------


def test_write_lock_is_reentrant_and_excludes_other_threads(tmp_path: Path) -> None:
    import threading

    from recs.errors import ArtifactBusyError

    target = tmp_path / "model"
    caught: list[BaseException] = []

    def other() -> None:
        try:
            with io.write_lock(target, timeout=0.1):
                pass
        except BaseException as exc:
            caught.append(exc)

    with io.write_lock(target), io.write_lock(target):  # re-entrant in one thread
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(caught) == 1 and isinstance(caught[0], ArtifactBusyError)
    assert str(caught[0]) == (
        f"{target} is being written by another recs process (lock .model.lock); try again when it finishes"
    )
    assert caught[0].exit_code == 5
    with io.write_lock(target, timeout=0.1):  # released: free again
        pass


def test_write_lock_excludes_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from recs.errors import ArtifactBusyError

    target = tmp_path / "model"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from recs.io import write_lock\nwith write_lock({str(target)!r}):\n"
                               "    print('held', flush=True)\n    input()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(RECS.parent)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv(io.LOCK_TIMEOUT_ENV, "0.2")
        with pytest.raises(ArtifactBusyError, match="being written by another recs process"), io.write_lock(target):
            pass
    finally:
        holder.communicate("\n", timeout=60)
    with io.write_lock(target):  # the holder is gone: free again
        pass


def test_concurrent_read_modify_writes_lose_no_update(tmp_path: Path) -> None:
    import threading

    target = tmp_path / "counter"
    atomic_replace_dir(target, lambda tmp: (tmp / "n").write_text("0"))

    def bump() -> None:
        for _ in range(10):
            with io.write_lock(target, timeout=60):
                n = int((target / "n").read_text())
                atomic_replace_dir(target, lambda tmp, n=n: (tmp / "n").write_text(str(n + 1)))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (target / "n").read_text() == "40"


def test_the_next_writer_removes_what_killed_runs_left(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = atomic_replace_dir(tmp_path / "model", lambda tmp: (tmp / "a.txt").write_text("v1"))
    for name in (".model.tmp-abc123", ".model.work", ".model.work-bundler", f"model{BACKUP_INFIX}0001-aa"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "blob.bin").write_bytes(b"x" * 2_000_000)
    (tmp_path / ".other.tmp-zzz").mkdir()  # another target's: not ours to touch
    with caplog.at_level("WARNING", logger="recs.io"), io.write_lock(target):
        pass
    assert _names(tmp_path) == [".model.lock", ".other.tmp-zzz", "model"]
    removed = [r.getMessage() for r in caplog.records]
    assert len(removed) == 4 and all("(2.0 MB) left by an interrupted run" in m for m in removed)
    assert (target / "a.txt").read_text() == "v1"


def test_an_interrupted_swap_is_restored_not_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = atomic_replace_dir(tmp_path / "model", lambda tmp: (tmp / "a.txt").write_text("v1"))
    fail_replace_on(monkeypatch, {2, 3})  # killed between the two renames: only the backup is left
    with pytest.raises(OSError, match="simulated crash"):
        atomic_replace_dir(target, lambda tmp: (tmp / "a.txt").write_text("v2"))
    monkeypatch.undo()
    assert not target.exists()
    assert io.clean_stale(target) == 0
    assert (target / "a.txt").read_text() == "v1"
    assert _names(tmp_path) == ["model"]
