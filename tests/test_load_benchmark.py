"""benchmarks/load.py in a tiny configuration: the real `recs serve` on a copy of the trained
artifact killed with SIGKILL during a burst of POST /events loses no acknowledged event, a few
seconds of load with reloads, a forget and events in the middle fail no request, and the
hand-written peer answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from benchmarks.load import build_rows, failed_during_reload, main, served_data
from benchmarks.loadkit import (
    Call,
    Run,
    child_env,
    drive,
    events_burst,
    forget_action,
    free_port,
    recs_argv,
    reload_action,
    start,
    stop,
)


@pytest.fixture(scope="module")
def served(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(trained_artifact, tmp_path_factory.mktemp("load") / "model"))


def test_the_script_kills_during_event_appends_and_loses_no_acknowledged_event(served: Path, tmp_path: Path) -> None:
    """The whole script, small: load with a reload, a forget and events, then the crash."""
    out = tmp_path / "results"
    code = main(["--model", str(served), "--seconds", "3", "--clients", "3", "--workers", "1", "--reloads", "1",
                 "--events", "10", "--kill-after", "25", "--skip", "rerank,peer", "--work", str(tmp_path / "work"),
                 "--out", str(out)])
    rows = json.loads((out / "load.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["recs"]
    metrics = rows[0]["metrics"]
    assert metrics["restarted_after_kill"] == 1, (tmp_path / "work" / "logs" / "crash-restart.log").read_text()
    assert metrics["events_acked"] >= 25 and metrics["events_lost"] == 0, metrics
    assert metrics["errors"] == 0 and metrics["failed_during_reload"] == 0 and metrics["reloads"] == 1, rows[0]["notes"]
    assert code == 0 and (out / "load.md").is_file() and (out / "load.png").is_file()


def test_no_request_fails_during_reloads_a_forget_and_events(served: Path, tmp_path: Path) -> None:
    users, items = served_data(served)
    port = free_port()
    server = start(recs_argv(served, port, 1, tmp_path / "events.sqlite"), child_env(1), tmp_path / "serve.log", port)
    forgotten = users[0]
    actions = [(0.5, "forget", forget_action(forgotten)), (1.0, "reload", reload_action),
               (1.5, "events", events_burst(users, items, 12, senders=3))]
    try:
        # The forgotten user is asked for all along: after the DELETE, the fallback answers.
        run = drive(server.base, [forgotten, *users[1:4]], clients=3, seconds=4.0, max_requests=400, rerank=False,
                    actions=actions)
    finally:
        stop(server)
    kinds = [c.kind for c in run.calls]
    assert kinds.count("reload") == 1 and kinds.count("forget") == 1 and kinds.count("events") == 12
    failed = [(c.kind, c.status, c.note) for c in run.calls if not c.ok]
    assert not failed, failed
    assert failed_during_reload(run.calls) == 0
    assert kinds.count("recommend") > 0


def test_failed_during_reload_counts_failures_in_a_reload_window() -> None:
    calls = [Call("reload", 10.0, 12.0, 200), Call("recommend", 14.5, 14.6, 0),  # inside: 12 + 2 + 1
             Call("recommend", 16.0, 16.1, 500), Call("events", 8.5, 9.2, 503), Call("recommend", 11.0, 11.1, 200)]
    assert failed_during_reload(calls) == 2


def test_rows_and_ratios_against_the_peer() -> None:
    import argparse

    def run(n: int, ms: float) -> Run:
        return Run([Call("recommend", 0.0, ms / 1000.0, 200) for _ in range(n)], seconds=1.0)

    args = argparse.Namespace(clients=2, workers=1, threads=1, kill_after=5)
    rows = build_rows({"recs": run(20, 10.0), "peer_st_faiss": run(10, 40.0)}, None, args)
    recs = rows[0]["metrics"]
    assert recs["requests_per_s"] == 20.0 and recs["errors"] == 0 and recs["failed_during_reload"] == 0
    assert recs["requests_per_s_vs_peer"] == 2.0 and recs["p99_vs_peer"] == 0.25
    assert [r["method"] for r in rows] == ["recs", "peer_st_faiss"]


def test_the_peer_answers_from_minilm_style_pooling_and_faiss(
    served: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.load_peer import build_graph, create_app

    graph = build_graph(tiny_model_dir, tmp_path / "peer.onnx", int8=False)
    monkeypatch.setenv("PEER_GRAPH", str(graph))
    monkeypatch.setenv("PEER_TOKENIZER", str(tiny_model_dir / "tokenizer.json"))
    monkeypatch.setenv("PEER_DATA", str(served))
    client = TestClient(create_app())
    users, items = served_data(served)
    got = client.post("/recommend", json={"user_id": users[0], "k": 5})
    assert got.status_code == 200, got.text
    answer = got.json()["items"]
    assert len(answer) == 5 and {i["item_id"] for i in answer} <= set(items)
    assert [i["score"] for i in answer] == sorted((i["score"] for i in answer), reverse=True)
    assert client.post("/recommend", json={"user_id": "nobody", "k": 5}).status_code == 404
