"""Load and faults of the HTTP service: `recs serve` driven by concurrent clients on this machine.

    python benchmarks/load.py [--model build/demo/onnx] [--seconds 40] [--clients 8] [--workers 2]
                              [--threads 1] [--max-requests 20000] [--work build/load]

1. `recs` and `recs+rerank`: `recs serve --model MODEL --workers W` on 127.0.0.1 (ONNX int8, an
   event store in `--work`), `--clients` closed-loop clients (a thread each, httpx) asking
   `POST /recommend` (k=10, unknown_user "fallback") for users drawn at random from the model's log,
   for `--seconds` or `--max-requests` in all, rerank off, then on (time budget `--rerank-budget-ms`:
   on 2 busy cores the cross-encoder misses a 250 ms budget, and a skipped one measures nothing).
   During the `recs` run the benchmark reloads the model (`POST /admin/reload`, `--reloads`
   times), forgets one user (`DELETE /users/U`: later requests for U get the fallback answer, not
   an error) and sends a burst of `POST /events`. `errors`: requests (of every kind) without a 200;
   `failed_during_reload`: those that overlapped a window around a reload (from 1 s before it to
   1 s + its duration after it: the other workers follow a reload in the background).
2. The crash: a fresh service, `--clients` clients posting one event each (unique timestamps),
   SIGKILL to the service's process group after `--kill-after` acknowledged events, a restart on
   the same store, and every event whose POST got a 200 looked up by (user, item, timestamp):
   `events_lost` (target 0) on the `recs` row.
3. `peer_st_faiss`: benchmarks/load_peer.py (untuned MiniLM through onnxruntime, int8, + FAISS
   flat index, what a team writes by hand) under the same clients, workers and threads; the
   `recs` rows get `requests_per_s_vs_peer` and `p99_vs_peer` (recs / peer).

Writes benchmarks/results/load.json, load.md and load.png (requests/s per method). The servers'
output is in `<work>/logs/`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script: `python benchmarks/load.py`
    sys.path.insert(0, str(_REPO))

from benchmarks.loadkit import (  # noqa: E402  (after the path is set)
    Action,
    Call,
    Run,
    child_env,
    drive,
    events_burst,
    forget_action,
    free_port,
    kill,
    peer_argv,
    recs_argv,
    reload_action,
    start,
    stop,
    timed,
)

TABLE_METRICS = ("requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors", "failed_during_reload",
                 "events_acked", "events_lost", "degraded", "requests_per_s_vs_peer", "p99_vs_peer")


# ------------------------------------------------------------------------------------ figures


def percentiles(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = (float(np.percentile(values, q)) for q in (50, 95, 99))
    return {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "p99_ms": round(p99, 2)}


def failed_during_reload(calls: Sequence[Call], margin_s: float = 1.0) -> int:
    """Failed requests that overlapped [reload start - margin, reload end + its duration + margin]."""
    windows = [(c.start - margin_s, c.end + (c.end - c.start) + margin_s) for c in calls if c.kind == "reload"]
    return sum(1 for c in calls if c.kind in ("recommend", "events") and not c.ok
               and any(c.start <= b and c.end >= a for a, b in windows))


def summarise(run: Run) -> dict[str, float]:
    asked = [c for c in run.calls if c.kind == "recommend"]
    answered = [c for c in asked if c.ok]
    metrics: dict[str, float] = {
        "requests": len(asked),
        "requests_per_s": round(len(answered) / run.seconds, 2) if run.seconds else 0.0,
        **percentiles([(c.end - c.start) * 1000.0 for c in answered]),
        "errors": sum(not c.ok for c in run.calls),
    }
    if run.degraded:
        metrics["degraded"] = run.degraded
    return metrics


def first_errors(run: Run, n: int = 5) -> list[str]:
    return [f"{c.kind} {c.status} {c.note}".strip() for c in run.calls if not c.ok][:n]


# ------------------------------------------------------------------------------------ the crash


@dataclass
class CrashResult:
    acked: int
    lost: int
    found_unacked: int  # events stored whose POST got no answer (in flight at the kill): fine
    restarted: bool


def crash(model: Path, store: Path, users: Sequence[str], items: Sequence[str], *, env: dict[str, str], workers: int,
          clients: int, kill_after: int, logs: Path, timeout_s: float = 60.0) -> CrashResult:
    """POST /events from `clients` threads, SIGKILL the service after `kill_after` acknowledged
    events, restart it on the same store, and look every acknowledged event up there."""
    import httpx

    from recs.serving.eventstore import open_store

    port = free_port()
    server = start(recs_argv(model, port, workers, store), env, logs / "crash.log", port)
    acked: set[tuple[str, str, int]] = set()
    lock, counter, stopped = threading.Lock(), [0], threading.Event()
    base_ts = 1_600_000_000  # each event's own second: its identity with (user, item)

    def client_loop(n: int) -> None:
        rng = random.Random(10_000 + n)
        with httpx.Client(base_url=server.base, timeout=30) as client:
            while not stopped.is_set():
                with lock:
                    counter[0] += 1
                    ts = base_ts + counter[0]
                key = (rng.choice(users), rng.choice(items), ts)
                body = {"events": [{"user_id": key[0], "item_id": key[1], "event": "purchase", "timestamp": ts}]}
                call, answer = timed(client, "events", "POST", "/events", json=body)
                if call.ok and answer and answer.get("accepted") == 1:
                    with lock:
                        acked.add(key)
                elif not call.ok and call.status == 0:
                    return  # the service is gone

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    while len(acked) < kill_after and time.monotonic() < deadline:
        time.sleep(0.01)
    kill(server)  # in the middle of the burst: requests are in flight
    stopped.set()
    for t in threads:
        t.join(30)
    with lock:
        acked_now = set(acked)
    restarted = True
    try:
        stop(start(recs_argv(model, port, workers, store), env, logs / "crash-restart.log", port))
    except RuntimeError as err:
        print(f"restart after the kill failed: {err}", file=sys.stderr)
        restarted = False
    reader = open_store(store)
    try:
        frame = reader.read()
    finally:
        reader.close()
    stored = {(u, i, round(t)) for u, i, t in zip(frame["user_id"], frame["item_id"],
                                                        frame["timestamp"].dt.epoch("us") / 1e6, strict=True)}
    return CrashResult(len(acked_now), len(acked_now - stored), len({k for k in stored if k[2] > base_ts} - acked_now), restarted)


# ------------------------------------------------------------------------------------ main


def served_data(model: Path) -> tuple[list[str], list[str]]:
    """The users of the model's log and its catalog's item ids."""
    import polars as pl

    users = pl.read_parquet(model / "events.parquet", columns=["user_id"])["user_id"].unique().sort().to_list()
    items = pl.read_parquet(model / "items.parquet", columns=["item_id"])["item_id"].to_list()
    return [str(u) for u in users], [str(i) for i in items]


def fresh_store(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def recs_actions(args: argparse.Namespace, users: Sequence[str], items: Sequence[str], forgotten: str) -> list[Action]:
    """Reloads spread over the run, the forget at 40 %, the burst of events at 60 %."""
    moments = [args.seconds * (i + 1) / (args.reloads + 1) for i in range(args.reloads)]
    actions: list[Action] = [(at, "reload", reload_action) for at in moments]
    actions.append((args.seconds * 0.4, "forget", forget_action(forgotten)))
    if args.events:
        actions.append((args.seconds * 0.6, "events", events_burst(users, items, args.events)))
    return actions


def run_recs(args: argparse.Namespace, env: dict[str, str], users: list[str], items: list[str]) -> dict[str, Run]:
    port = free_port()
    store = fresh_store(args.work / "store-load.sqlite")
    server = start(recs_argv(args.model, port, args.workers, store), env, args.work / "logs" / "recs.log", port)
    forgotten = random.Random(args.seed).choice(users)
    try:
        plain = drive(server.base, users, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests,
                      rerank=False, actions=recs_actions(args, users, items, forgotten), seed=args.seed)
        print(f"recs: {summarise(plain)}", flush=True)
        runs = {"recs": plain}
        if "rerank" not in args.skip:
            runs["recs+rerank"] = drive(server.base, users, clients=args.clients, seconds=args.rerank_seconds or args.seconds,
                                        max_requests=args.max_requests, rerank=True, seed=args.seed + 1,
                                        budget_ms=args.rerank_budget_ms)
            print(f"recs+rerank: {summarise(runs['recs+rerank'])}", flush=True)
    finally:
        stop(server)
    return runs


def run_peer(args: argparse.Namespace, env: dict[str, str], users: list[str]) -> Run:
    from benchmarks.load_peer import build_graph
    from recs.encoders.backbone import resolve_model_path

    graph = build_graph(args.backbone, args.work / "peer" / "minilm-int8.onnx")
    env = {**env, "PEER_GRAPH": str(graph), "PEER_DATA": str(args.model),
           "PEER_TOKENIZER": str(resolve_model_path(args.backbone) / "tokenizer.json")}
    port = free_port()
    server = start(peer_argv(port, args.workers), env, args.work / "logs" / "peer.log", port)
    try:
        run = drive(server.base, users, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests,
                    rerank=False, seed=args.seed)
    finally:
        stop(server)
    print(f"peer_st_faiss: {summarise(run)}", flush=True)
    return run


def build_rows(runs: dict[str, Run], result: CrashResult | None, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    setting = f"{args.clients} clients, {args.workers} worker(s), {args.threads} thread(s) each, ONNX int8, 127.0.0.1"
    for method, run in runs.items():
        metrics = summarise(run)
        notes = f"{setting}; POST /recommend k=10 for random users"
        if method == "recs":
            metrics["failed_during_reload"] = failed_during_reload(run.calls)
            metrics["reloads"] = sum(c.kind == "reload" for c in run.calls)
            metrics["events_posted"] = sum(c.kind == "events" for c in run.calls)
            if result is not None:
                metrics.update(events_acked=result.acked, events_lost=result.lost, restarted_after_kill=int(result.restarted))
            notes += (f", rerank off; during it {int(metrics['reloads'])} POST /admin/reload, one DELETE /users/U, "
                      f"{int(metrics['events_posted'])} POST /events; events_lost: SIGKILL after {args.kill_after} acknowledged events")
        elif method == "recs+rerank":
            budget = f"time_budget_ms {args.rerank_budget_ms:g}" if args.rerank_budget_ms else "the model's time budget"
            notes += f", rerank on (cross-encoder, {budget}; degraded: answers whose cross-encoder missed it)"
        else:
            notes += "; untuned MiniLM (int8) over the user's last 10 titles + FAISS IndexFlatIP"
        bad = first_errors(run)
        if bad:
            notes += f"; first errors: {' | '.join(bad)}"
        rows.append({"dataset": "demo", "method": method, "slice": "all", "metrics": metrics, "notes": notes})
    peer = next((r["metrics"] for r in rows if r["method"] == "peer_st_faiss"), None)
    if peer and peer["requests_per_s"] and peer["p99_ms"]:
        for row in rows:
            if row["method"] != "peer_st_faiss":
                row["metrics"]["requests_per_s_vs_peer"] = round(row["metrics"]["requests_per_s"] / peer["requests_per_s"], 3)
                row["metrics"]["p99_vs_peer"] = round(row["metrics"]["p99_ms"] / peer["p99_ms"], 3)
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=_REPO / "build" / "demo" / "onnx",
                        help="the served folder (default: `make demo`'s ONNX int8 export)")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each method's run")
    parser.add_argument("--rerank-seconds", type=float, default=None, help="length of the rerank-on run (default --seconds)")
    parser.add_argument("--rerank-budget-ms", type=float, default=5000.0,
                        help="the rerank run's time_budget_ms (a model's default budget may skip the cross-encoder under load); 0: the model's")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (recs and the peer alike)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per worker")
    parser.add_argument("--max-requests", type=int, default=20000, help="at most this many /recommend per run")
    parser.add_argument("--reloads", type=int, default=3, help="POST /admin/reload during the recs run")
    parser.add_argument("--events", type=int, default=200, help="POST /events in the burst during the recs run")
    parser.add_argument("--kill-after", type=int, default=150, help="crash: acknowledged events before the SIGKILL")
    parser.add_argument("--backbone", default=None, help="the peer's MiniLM folder (default: the packaged one)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: rerank, crash, peer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=_REPO / "build" / "load")
    parser.add_argument("--out", type=Path, default=_REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not (args.model / "manifest.json").is_file():
        parser.error(f"--model {args.model}: no artifact there (run `make demo`, or pass an export folder)")
    if args.clients < 1 or args.workers < 1 or args.seconds <= 0 or args.max_requests < 1:
        parser.error("--clients, --workers, --max-requests must be >= 1 and --seconds > 0")
    args.model, args.work = args.model.absolute(), args.work.absolute()
    args.rerank_budget_ms = args.rerank_budget_ms or None
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from recs.evaluation.report import format_table, plot_metrics, write_results

    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    env = child_env(args.threads)
    users, items = served_data(args.model)
    runs = run_recs(args, env, users, items)
    result = None
    if "crash" not in args.skip:
        result = crash(args.model, fresh_store(args.work / "store-crash.sqlite"), users, items, env=env,
                       workers=args.workers, clients=args.clients, kill_after=args.kill_after, logs=args.work / "logs")
        print(f"crash: {result}", flush=True)
    if "peer" not in args.skip:
        runs["peer_st_faiss"] = run_peer(args, env, users)
    rows = build_rows(runs, result, args)
    settings = {k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    notes = [f"machine: {os.cpu_count()} CPU cores shared by the clients and the servers; {rows[0]['notes'].split(';')[0]}",
             "errors: requests of every kind (recommend, events, reload, forget) without a 200; failed_during_reload: "
             "of those, the ones overlapping a reload's window (1 s before it to 1 s + its duration after it)",
             "events_lost: events acknowledged (200) before a SIGKILL of the service's process group and missing "
             "from the store after the restart; *_vs_peer: recs / peer_st_faiss"]
    print(format_table(rows, TABLE_METRICS))
    json_path, _ = write_results("load", rows, args.out, extra={"settings": settings}, sections={"How to read it": notes})
    plot_metrics(rows, args.out / "load.png", metric="requests_per_s")
    print(f"wrote {json_path}")
    bad = any(r["metrics"].get("errors") or r["metrics"].get("events_lost") for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
