"""Fault benchmark: `kill -9` the writing commands at random moments, then check what is left.

    python benchmarks/faults.py [--kills-per-command 8] [--commands build-index,export,train-ranker,train-bundler]
                                [--seed 0] [--work build/faults]

In `--work` (emptied first): the demo shop (`recs data demo --scale 0.25`), a tiny random BERT
(`recs.encoders.build_tiny_bert`), and a base artifact made with the real CLI: `recs train`
(1 epoch, few pairs), `train-ranker`, `train-bundler` and `export` (the steps the chosen commands
need). Then, for each command:

1. one uninterrupted run, timed (d seconds);
2. K times (seeded): the real CLI (`python -m recs.cli ...`) starts in its own process group and
   gets SIGKILL at a moment drawn uniformly in [0, 1.1 d] (d: the median of the uninterrupted runs
   so far, step 1's and the earlier steps (c), since a shared machine's load changes); then
   (a) the folder the command writes (the artifact; for `export` the export folder of an earlier
       export) must load with `Engine.load` -> `loadable_after`;
   (b) 5 fixed users, k=10 (and each one's best bundle of 2-3 items when the folder has a set
       scorer): item ids and scores (to 1e-5) must equal those before the kill, or,
       when the command had replaced the folder, those of the new version (the next uninterrupted
       run's answers: the commands are deterministic) -> `answers_unchanged`;
   (c) the same command runs again uninterrupted (`next_run_ok`), and the bytes of temporary data
       left around the target are measured: `.NAME.tmp-*`, `NAME.bak-*`, `.NAME.work`, any other
       `.NAME.*` (a `*.lock` file is fine), and `recs-*` entries in the temporary folder the
       children use -> `stale_bytes_after_next_run` (max over the kills); the same measured right
       after the kill, before the next run cleans it -> `left_by_kill_bytes` (max) and
       `kills_leaving_data` (count).

The children get a private TMPDIR per command (`<work>/tmp/<command>`), so that `recs-*` folders of
other processes on the machine, or of another command, are not counted; before each command the
leftovers of the earlier ones are deleted. `stale_bytes_after_clean_run` is what the uninterrupted
run (step 1) leaves.
`killed_after_completion` counts runs that had exited before their kill moment;
`new_version_after_kill` runs whose kill left a replaced folder (manifest changed).

`events_lost` (SIGKILL of the HTTP service during event appends) is measured by benchmarks/load.py.
Every kill is recorded under "kills" in the JSON, with the names of
the stale entries; the children's output is in `<work>/logs/`.
Writes benchmarks/results/faults.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script: `python benchmarks/faults.py`
    sys.path.insert(0, str(_REPO))

BENCHMARK = "faults"
RESULTS_DIR = _REPO / "benchmarks" / "results"
COMMANDS: tuple[str, ...] = ("build-index", "export", "train-ranker", "train-bundler")
MARKER = ".recs-faults"  # a work folder with it may be emptied; any other non-empty folder is refused
TABLE_METRICS: tuple[str, ...] = (
    "kills", "killed_after_completion", "new_version_after_kill", "loadable_after", "answers_unchanged",
    "next_run_ok", "kills_leaving_data", "left_by_kill_bytes", "stale_bytes_after_next_run", "stale_bytes_after_clean_run", "seconds_uninterrupted",
)
Answers = dict[str, list[tuple[str, float]]]


# ------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class Layout:
    work: Path

    @property
    def shop(self) -> Path:
        return self.work / "shop"

    @property
    def tiny(self) -> Path:
        return self.work / "tiny-bert"

    @property
    def model(self) -> Path:
        return self.work / "model"

    @property
    def onnx(self) -> Path:
        return self.work / "onnx"

    def tmp(self, command: str) -> Path:
        """The children's TMPDIR, one per command: what is left there is that command's."""
        return self.work / "tmp" / command

    @property
    def logs(self) -> Path:
        return self.work / "logs"


def command_args(name: str, lay: Layout) -> list[str]:
    """The CLI arguments of one benchmarked (or base) step. Every step is deterministic: no
    `--max-minutes`, so that a loaded machine gives the same model."""
    model, shop = str(lay.model), str(lay.shop)
    args = {
        "train": ["train", "--data", shop, "--out", model, "--model", str(lay.tiny), "--epochs", "1", "--max-pairs", "256"],
        "build-index": ["build-index", "--model", model],
        "train-ranker": ["train-ranker", "--model", model, "--data", shop, "--ce-epochs", "1"],
        "train-bundler": ["train-bundler", "--model", model, "--data", shop, "--epochs", "2"],
        "export": ["export", "--model", model, "--out", str(lay.onnx)],
    }
    return args[name]


def target_of(name: str, lay: Layout) -> Path:
    return lay.onnx if name == "export" else lay.model


def base_steps(commands: Sequence[str]) -> list[str]:
    """The steps that make the base artifact: every component the chosen commands touch."""
    wanted = set(commands)
    if "export" in wanted:  # the export holds every stage
        wanted |= {"train-ranker", "train-bundler"}
    return ["train"] + [s for s in ("train-ranker", "train-bundler", "export") if s in wanted]


def prepare_work(work: Path) -> None:
    """Empty `work` (only one this script made, or an empty one) and mark it as ours."""
    if work.exists():
        if not work.is_dir() or (any(work.iterdir()) and not (work / MARKER).is_file()):
            raise SystemExit(f"refusing to empty {work}: it is not a work folder of benchmarks/faults.py")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("work folder of benchmarks/faults.py (emptied by each run)\n", encoding="utf-8")


# ------------------------------------------------------------------------------------ children


def child_env(tmp: Path) -> dict[str, str]:
    """This checkout's `recs` (not an installed copy), the temp folder `tmp`, passive OpenMP."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["TMPDIR"] = str(tmp)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads starve a shared CPU
    return env


@dataclass
class ChildResult:
    returncode: int | None  # None: killed
    seconds: float
    killed: bool


def cli(args: Sequence[str]) -> list[str]:
    """The real command line: this Python, `-m recs.cli`."""
    return [sys.executable, "-m", "recs.cli", *args]


def run_child(argv: list[str], env: dict[str, str], log: Path, kill_after: float | None = None) -> ChildResult:
    """`argv` in its own process group; SIGKILL to the whole group (workers included) after
    `kill_after` seconds unless it exits first. Output goes to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=_REPO, start_new_session=True)
        try:
            proc.wait(timeout=kill_after)
            return ChildResult(proc.returncode, time.perf_counter() - started, killed=False)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return ChildResult(None, time.perf_counter() - started, killed=True)
        except BaseException:  # Ctrl-C: no child outlives the benchmark
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def run_step(name: str, lay: Layout, env: dict[str, str], tag: str) -> float:
    """One uninterrupted run that must succeed; returns its seconds."""
    log = lay.logs / f"{tag}.log"
    result = run_child(cli(command_args(name, lay)), env, log)
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"`recs {name}` failed (exit {result.returncode}); {log}:\n{tail}")
    return result.seconds


# ------------------------------------------------------------------------------------ checks


def fixed_users(shop: Path, n: int = 5) -> list[str]:
    """`n` users spread evenly over the sorted user ids of the shop's events."""
    import polars as pl

    users = sorted(pl.read_csv(shop / "events.csv", columns=["user_id"])["user_id"].unique().to_list())
    step = max(1, len(users) // n)
    return users[::step][:n]


def answers(target: Path, users: Sequence[str], k: int = 10) -> Answers:
    """Load the folder with `Engine.load` and answer each user: top k, and the best bundle of 2-3
    items when there is a set scorer (so that train-bundler's output is checked too). Raises
    what loading raises."""
    from recs.serving.engine import Engine

    engine = Engine.load(target)
    out: Answers = {u: [(r.item_id, r.score) for r in engine.recommend(u, k=k)] for u in users}
    if engine.bundler is not None:
        for u in users:
            out[f"{u}/bundle"] = [("+".join(b.item_ids), b.score) for b in engine.bundle(u, size=(2, 3), n=1)]
    return out


def same_answers(a: Answers | None, b: Answers | None, tol: float = 1e-5) -> bool:
    if a is None or b is None or a.keys() != b.keys():
        return False
    for user, left in a.items():
        right = b[user]
        if [i for i, _ in left] != [i for i, _ in right]:
            return False
        if any(abs(x - y) > tol for (_, x), (_, y) in zip(left, right, strict=True)):
            return False
    return True


def manifest_digest(target: Path) -> str | None:
    try:
        return hashlib.sha256((target / "manifest.json").read_bytes()).hexdigest()
    except OSError:
        return None


def tree_bytes(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while we walk
                total += (Path(dirpath) / name).lstat().st_size
    return total


def stale_entries(target: Path, tmp: Path) -> dict[str, int]:
    """Temporary data left around `target`: `.NAME.*` (temp folders, work folders; a `*.lock`
    file is fine) and `NAME.bak-*` beside it, `recs-*` in the children's temp folder.
    Returns {path: bytes}."""
    name = target.name
    found: dict[str, int] = {}
    beside = list(target.parent.iterdir()) if target.parent.is_dir() else []
    for entry in beside:
        hidden = entry.name.startswith(f".{name}.") and not entry.name.endswith(".lock")
        if hidden or entry.name.startswith(f"{name}.bak-"):
            found[str(entry)] = tree_bytes(entry)
    for entry in tmp.glob("recs-*") if tmp.is_dir() else []:
        found[str(entry)] = tree_bytes(entry)
    return found


def clear_leftovers(target: Path, tmp: Path) -> None:
    """Delete what earlier commands left (see `stale_entries`), so that a command is measured
    on its own leftovers only. A backup is deleted only while the folder itself exists."""
    for entry in map(Path, stale_entries(target, tmp)):
        if entry.name.startswith(f"{target.name}.bak-") and not target.is_dir():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def backup_present(target: Path) -> bool:
    return any(p.name.startswith(f"{target.name}.bak-") for p in target.parent.iterdir())


# ------------------------------------------------------------------------------------ one kill


@dataclass
class KillRecord:
    command: str
    kill: int
    kill_at_s: float
    finished_before_kill: bool
    returncode: int | None
    backup_present: bool  # an interrupted swap left `NAME.bak-*`; Engine.load renames it back
    loadable: bool
    load_error: str
    new_version: bool
    answers: str  # "old" | "new" | "changed" | "unloadable"
    next_run_rc: int | None
    next_run_s: float
    stale_bytes: int
    stale: dict[str, int] = field(default_factory=dict)
    left_by_kill_bytes: int = 0  # leftovers right after the kill, before the next run cleans them


def one_kill(name: str, i: int, kill_at: float, lay: Layout, env: dict[str, str], users: Sequence[str],
             before: Answers) -> tuple[KillRecord, Answers | None]:
    """Kill one run at `kill_at`, check the folder, run again, measure leftovers. Returns the
    record and the answers after the next run (the `before` of the next kill)."""
    target = target_of(name, lay)
    digest = manifest_digest(target)
    child = run_child(cli(command_args(name, lay)), env, lay.logs / f"{name}-kill{i:02d}.log", kill_after=kill_at)
    had_backup = backup_present(target)
    after: Answers | None = None
    error = ""
    try:
        after = answers(target, users)
    except Exception as exc:  # any failure to load is the finding, whatever its type
        error = f"{type(exc).__name__}: {exc}"[:300]
    new_version = manifest_digest(target) != digest
    left_by_kill = sum(stale_entries(target, lay.tmp(name)).values())
    rerun = run_child(cli(command_args(name, lay)), env, lay.logs / f"{name}-next{i:02d}.log")
    try:
        following: Answers | None = answers(target, users)
    except Exception:
        following = None
    if after is None:
        verdict = "unloadable"
    elif same_answers(after, before):
        verdict = "old"
    elif (new_version or not child.killed) and same_answers(after, following):
        verdict = "new"
    else:
        verdict = "changed"
    stale = stale_entries(target, lay.tmp(name))
    record = KillRecord(
        command=name, kill=i, kill_at_s=round(kill_at, 3), finished_before_kill=not child.killed,
        returncode=child.returncode, backup_present=had_backup, loadable=after is not None, load_error=error,
        new_version=new_version, answers=verdict, next_run_rc=rerun.returncode, next_run_s=round(rerun.seconds, 3),
        stale_bytes=sum(stale.values()), stale={Path(p).name: b for p, b in stale.items()},
        left_by_kill_bytes=left_by_kill,
    )
    return record, following


def command_row(name: str, seconds: float, clean_stale: int, records: Sequence[KillRecord]) -> dict[str, Any]:
    names = sorted({n for r in records for n in r.stale})
    metrics = {
        "kills": len(records),
        "killed_after_completion": sum(r.finished_before_kill for r in records),
        "new_version_after_kill": sum(r.new_version for r in records),
        "loadable_after": sum(r.loadable for r in records),
        "answers_unchanged": sum(r.answers in ("old", "new") for r in records),
        "next_run_ok": sum(r.next_run_rc == 0 for r in records),
        "left_by_kill_bytes": max((r.left_by_kill_bytes for r in records), default=0),
        "kills_leaving_data": sum(r.left_by_kill_bytes > 0 for r in records),
        "stale_bytes_after_next_run": max((r.stale_bytes for r in records), default=0),
        "stale_bytes_after_clean_run": clean_stale,
        "seconds_uninterrupted": round(seconds, 2),
    }
    restored = sum(r.backup_present for r in records)
    moments = sorted(r.kill_at_s for r in records)
    notes = (f"`recs {' '.join(command_args(name, Layout(Path('W'))))}`; SIGKILL to the process group at "
             f"{moments[0]:.1f}-{moments[-1]:.1f} s; {restored} kill(s) left a NAME.bak-* that Engine.load restored; "
             f"stale entries: {', '.join(names) or 'none'}")
    return {"dataset": "demo", "method": name, "slice": "all", "metrics": metrics, "notes": notes}


# ------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills-per-command", type=int, default=8, help="kills of each command (default 8: 32 in all)")
    parser.add_argument("--commands", default=",".join(COMMANDS), help=f"comma-separated, from {', '.join(COMMANDS)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--scale", type=float, default=0.25, help="demo shop size (`recs data demo --scale`)")
    parser.add_argument("--work", type=Path, default=_REPO / "build" / "faults", help="work folder (emptied first)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (faults.json, faults.md)")
    args = parser.parse_args(argv)
    args.commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = [c for c in args.commands if c not in COMMANDS]
    if unknown or not args.commands:
        parser.error(f"--commands: unknown {unknown}; choose from {', '.join(COMMANDS)}")
    if args.kills_per_command < 1:
        parser.error("--kills-per-command must be at least 1")
    return args


def build_base(args: argparse.Namespace, lay: Layout, env: dict[str, str]) -> None:
    from recs.data.demo import write_demo_shop
    from recs.encoders import build_tiny_bert

    write_demo_shop(lay.shop, seed=0, scale=args.scale)
    build_tiny_bert(lay.tiny, hidden=32, layers=2)
    for step in base_steps(args.commands):
        seconds = run_step(step, lay, env, f"base-{step}")
        print(f"base: recs {step} ({seconds:.1f}s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from recs.evaluation.report import format_table, write_results

    lay = Layout(args.work.absolute())
    prepare_work(lay.work)
    env = child_env(lay.tmp("base"))
    console = Console()
    build_base(args, lay, env)
    users = fixed_users(lay.shop)
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    records: list[KillRecord] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console) as progress:
        task = progress.add_task("kills", total=len(args.commands) * args.kills_per_command, info="")
        for name in args.commands:
            target, tmp = target_of(name, lay), lay.tmp(name)
            env = child_env(tmp)
            clear_leftovers(target, tmp)
            seconds = run_step(name, lay, env, f"{name}-clean")
            clean_stale = sum(stale_entries(target, tmp).values())
            before = answers(target, users)
            progress.console.print(f"{name}: uninterrupted {seconds:.1f}s, kills in [0, {1.1 * seconds:.1f}]s", highlight=False)
            mine: list[KillRecord] = []
            durations = [seconds]
            for i in range(args.kills_per_command):
                # 1.1 x the median uninterrupted run so far: one run timed while the machine was
                # busier would put many kills after the end.
                kill_at = rng.uniform(0.0, 1.1) * statistics.median(durations)
                record, following = one_kill(name, i, kill_at, lay, env, users, before)
                mine.append(record)
                before = following if following is not None else before
                if record.next_run_rc == 0:
                    durations.append(record.next_run_s)
                what = "exited first" if record.finished_before_kill else "killed"
                progress.update(task, advance=1, info=f"{name} #{i}: {what} at {record.kill_at_s:.1f}s, "
                                f"answers {record.answers}, stale {record.stale_bytes / 1e6:.1f} MB")
            records += mine
            rows.append(command_row(name, seconds, clean_stale, mine))
            write_results(BENCHMARK, rows, args.out, extra=_extra(records, args), sections=_sections())
    print(format_table(rows, TABLE_METRICS))
    json_path, md_path = write_results(BENCHMARK, rows, args.out, extra=_extra(records, args), sections=_sections())
    print(f"wrote {json_path} and {md_path}")
    bad = [r for r in records if not r.loadable or r.answers == "changed" or r.next_run_rc != 0]
    return 1 if bad else 0


def _extra(records: Sequence[KillRecord], args: argparse.Namespace) -> dict[str, Any]:
    return {"settings": {"seed": args.seed, "kills_per_command": args.kills_per_command, "scale": args.scale,
                         "commands": list(args.commands)},
            "kills": [asdict(r) for r in records]}


def _sections() -> dict[str, list[str]]:
    return {"How to read it": [
        "kills: runs started and sent SIGKILL (to the process group) at a seeded moment in [0, 1.1 x the uninterrupted run]; "
        "killed_after_completion: of those, runs that had already exited; new_version_after_kill: the folder had been replaced",
        "loadable_after: Engine.load succeeded on the folder right after the kill; answers_unchanged: 5 users x top 10 "
        "equal (ids, scores to 1e-5) to the answers before the kill, or to the new version's when the folder was replaced",
        "next_run_ok: the same command then succeeded; stale_bytes_after_next_run: the most bytes of .NAME.tmp-*, "
        "NAME.bak-*, .NAME.work* and recs-* temp folders left after that next run; stale_bytes_after_clean_run: "
        "after a run that was never killed",
        "events_lost (SIGKILL of the HTTP service during event appends): benchmarks/load.py, results/load.md",
    ]}


if __name__ == "__main__":
    raise SystemExit(main())
