"""Servers and closed-loop HTTP clients for benchmarks/load.py (and its test): a server in its own
process group (so a SIGKILL reaches every worker), timed requests, client threads with actions
(reload, forget, a burst of events) at set moments."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
TOKEN = "load-benchmark-token"


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(RECS_ADMIN_TOKEN=TOKEN, RECS_ONNX_PRECISION="int8", RECS_ORT_THREADS=str(threads),
               PEER_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads starve a shared CPU
    return env


def recs_argv(model: Path, port: int, workers: int, store: Path) -> list[str]:
    return [sys.executable, "-m", "recs.cli", "serve", "--model", str(model), "--port", str(port),
            "--workers", str(workers), "--events", str(store)]


def peer_argv(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "benchmarks.load_peer:create_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--log-level", "warning"]


def start(argv: Sequence[str], env: dict[str, str], log: Path, port: int, timeout_s: float = 300.0) -> Server:
    """Start a server in its own process group (a SIGKILL reaches every worker) and wait until
    GET /ready answers 200."""
    import httpx

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=_REPO, start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}); {log}:\n{server.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base}/ready", timeout=5).status_code == 200:
                return server
        if time.monotonic() > deadline:
            kill(server)
            raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s; {log}:\n{server.tail()}")
        time.sleep(0.25)


def kill(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait()


def stop(server: Server) -> None:
    """SIGTERM (uvicorn shuts its workers down), SIGKILL when that takes too long."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        kill(server)


@dataclass
class Call:
    kind: str  # recommend | events | reload | forget
    start: float
    end: float
    status: int  # 0: no answer (connection refused, reset, timed out)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def timed(client: Any, kind: str, method: str, url: str, **kwargs: Any) -> tuple[Call, Any]:
    """One request, timed; the parsed body when it is a 200 with JSON."""
    t0 = time.perf_counter()
    try:
        response = client.request(method, url, **kwargs)
    except Exception as err:  # every failure to answer is a counted error, whatever its type
        return Call(kind, t0, time.perf_counter(), 0, type(err).__name__), None
    call = Call(kind, t0, time.perf_counter(), response.status_code, "" if response.status_code == 200 else response.text[:200])
    body = None
    if call.ok:
        with contextlib.suppress(ValueError):
            body = response.json()
    return call, body


Action = tuple[float, str, Callable[[Any], list[Call]]]  # (seconds after the start, name, run)


@dataclass
class Run:
    calls: list[Call] = field(default_factory=list)
    seconds: float = 0.0
    degraded: int = 0


def drive(base: str, users: Sequence[str], *, clients: int, seconds: float, max_requests: int, rerank: bool,
          actions: Sequence[Action] = (), seed: int = 0, budget_ms: float | None = None) -> Run:
    """`clients` threads asking /recommend in a closed loop until `seconds` or `max_requests`;
    `actions` run on one more thread at their moments (their calls are recorded too).
    `budget_ms`: the requests' time_budget_ms (None: the model's)."""
    import httpx

    run, lock = Run(), threading.Lock()
    issued = [0]
    t_start = time.perf_counter()
    deadline = t_start + seconds

    def client_loop(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        with httpx.Client(base_url=base, timeout=60) as client:
            while time.perf_counter() < deadline:
                with lock:
                    if issued[0] >= max_requests:
                        return
                    issued[0] += 1
                body: dict[str, Any] = {"user_id": rng.choice(users), "k": 10, "rerank": rerank, "unknown_user": "fallback"}
                if budget_ms is not None:
                    body["time_budget_ms"] = budget_ms
                call, answer = timed(client, "recommend", "POST", "/recommend", json=body)
                with lock:
                    run.calls.append(call)
                    run.degraded += bool(answer and answer.get("degraded"))

    def action_loop() -> None:
        with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for at, _name, act in sorted(actions, key=lambda a: a[0]):
                time.sleep(max(0.0, t_start + at - time.perf_counter()))
                made = act(client)
                with lock:
                    run.calls.extend(made)

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
    if actions:
        threads.append(threading.Thread(target=action_loop, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - t_start
    return run


def reload_action(client: Any) -> list[Call]:
    return [timed(client, "reload", "POST", "/admin/reload")[0]]


def forget_action(user: str) -> Callable[[Any], list[Call]]:
    from urllib.parse import quote

    return lambda client: [timed(client, "forget", "DELETE", f"/users/{quote(user, safe='')}")[0]]


def events_burst(users: Sequence[str], items: Sequence[str], n: int, senders: int = 4) -> Callable[[Any], list[Call]]:
    """`n` POST /events of one event each, from `senders` threads at once."""

    def act(client: Any) -> list[Call]:
        calls: list[Call] = []
        lock = threading.Lock()

        def send(part: int) -> None:
            rng = random.Random(part)
            for _ in range(part, n, senders):
                event = {"user_id": rng.choice(users), "item_id": rng.choice(items), "event": "purchase"}
                call, _ = timed(client, "events", "POST", "/events", json={"events": [event]})
                with lock:
                    calls.append(call)

        workers = [threading.Thread(target=send, args=(p,)) for p in range(senders)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return calls

    return act
