"""The HTTP service (`recs.serving.app`, `recs serve`): every endpoint on a torch artifact and on
its ONNX export, error bodies (422 / 400 / 404 / 413 / 500, never a stack trace), limits, the
admin token, an atomic reload under a request in flight, metrics, and the real server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from recs.config import HttpConfig, load_config
from recs.serving import Engine
from recs.serving.app import create_app
from tests.conftest import copy_with_set_scorer

TOKEN = "test-token-123"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(ranked_artifact: Path, small_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ranked artifact with a set scorer (so /bundle answers)."""
    return copy_with_set_scorer(ranked_artifact, tmp_path_factory.mktemp("served") / "model", small_demo_dir)


@pytest.fixture(scope="module")
def onnx_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recs.export import export_artifact

    return export_artifact(model_dir, tmp_path_factory.mktemp("served-onnx") / "export", check=False).path


@pytest.fixture(scope="module")
def app(model_dir: Path):
    return create_app(model_dir, HttpConfig(max_body_bytes=4096))


@pytest.fixture()
def client(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def _user(client: TestClient) -> str:
    events = client.app.state.holder.current.engine.retriever.events  # type: ignore[attr-defined]
    buys = events.filter(pl.col("event") == "purchase")
    return str(buys.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])["user_id"][0])


def _error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) <= {"error", "detail", "serving"}, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


def test_health_ready_and_docs(client: TestClient, model_dir: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert ready == {"ready": True, "version": manifest["created"], "path": str(model_dir.absolute()), "backend": "torch"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/bundle", "/items/{item_id}", "/admin/reload", "/metrics", "/ready"} <= set(paths), set(paths)


def test_background_load_answers_health_first_and_ready_when_loaded(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = TestClient(create_app(model_dir, background=True), raise_server_exceptions=False)
    assert client.get("/health").status_code == 200
    deadline = time.monotonic() + 60
    while (got := client.get("/ready")).status_code != 200:
        assert got.status_code == 503 and "still loading" in _error(got) and time.monotonic() < deadline
        time.sleep(0.05)
    assert got.json()["version"] and client.post("/recommend", json={"text": "tea", "k": 2}).status_code == 200
    assert 'recs_model_info{backend="torch"' in client.get("/metrics").text
    broken = TestClient(create_app(tmp_path / "missing", background=True), raise_server_exceptions=False)
    while broken.app.state.holder.load_error is None:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    got = broken.get("/ready")
    assert got.status_code == 503 and "artifact folder not found" in _error(got)
    assert broken.post("/recommend", json={"text": "tea"}).status_code == 503
    assert broken.get("/health").status_code == 200
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    got = broken.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert got.status_code == 400 and "still loading (or failed" in _error(got)


def test_recommend_by_user_history_text_with_filters(client: TestClient) -> None:
    user = _user(client)
    got = client.post("/recommend", json={"user_id": user, "k": 5, "include_features": True})
    assert got.status_code == 200, got.text
    body = got.json()
    assert len(body["items"]) == 5 and body["degraded"] in (True, False) and body["model_version"]
    first = body["items"][0]
    assert {"rank", "item_id", "title", "price", "score", "source", "reason", "stages"} <= set(first)
    assert first["rank"] == 1 and first["reason"] and "ranker" in first["stages"] and first["features"]
    assert client.post("/recommend", json={"user_id": user, "k": 2}).json()["items"][0]["features"] is None
    history = [i["item_id"] for i in body["items"][:2]]
    by_history = client.post("/recommend", json={"history": history, "k": 3, "rerank": False})
    assert by_history.status_code == 200 and len(by_history.json()["items"]) == 3
    by_text = client.post("/recommend", json={"text": "coffee", "k": 3, "novelty": True, "diversity": 0.5})
    assert by_text.status_code == 200 and by_text.json()["items"]
    engine: Engine = client.app.state.holder.current.engine  # type: ignore[attr-defined]
    top = next(c for c in engine.retriever.categories if c).split(">")[0].strip()
    filtered = client.post("/recommend", json={
        "user_id": user, "k": 5, "category": top.lower(), "in_stock": True, "exclude_bought": True,
        "exclude": [body["items"][0]["item_id"]], "category_cap": 2, "price_min": 0, "price_max": 1e6,
    }).json()["items"]
    rows = engine.retriever.catalog.row_of
    assert filtered and all(engine.retriever.categories[rows[i["item_id"]]].lower().startswith(top.lower()) for i in filtered)
    assert body["items"][0]["item_id"] not in {i["item_id"] for i in filtered}


def test_bad_bodies_are_422_with_a_readable_message(client: TestClient) -> None:
    cases = [
        ({}, "give user_id, history or text"),
        ({"user_id": "u", "k": "ten"}, "k:"),
        ({"history": [1, 2]}, "history.0:"),
        ({"user_id": "u", "kk": 3}, "kk: Extra inputs are not permitted"),
        ({"user_id": "u", "unknown_user": "maybe"}, "unknown_user:"),
        ({"user_id": "u", "k": 201}, "at most 200 items per request"),
        ({"text": "x" * 2001}, "at most 2000 characters"),
    ]
    for body, message in cases:
        got = client.post("/recommend", json=body)
        assert got.status_code == 422, (body, got.text)
        assert message in _error(got), (body, got.json())
        assert all(set(d) == {"loc", "msg", "type"} for d in got.json()["detail"])  # the body is not echoed back
    got = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert got.status_code == 422 and _error(got)
    assert client.post("/bundle", json={"size": [2, 3]}).status_code == 422


def test_engine_errors_are_400_and_404(client: TestClient) -> None:
    user = _user(client)
    got = client.post("/recommend", json={"user_id": user, "category": "No Such > Category"})
    assert got.status_code == 400 and "categor" in _error(got).lower()
    got = client.post("/recommend", json={"user_id": user, "price_min": 50, "price_max": 10})
    assert got.status_code == 400 and "above price_max" in _error(got)
    got = client.post("/recommend", json={"user_id": user, "diversity": 3})
    assert got.status_code == 400 and "diversity" in _error(got)
    got = client.post("/recommend", json={"user_id": "nobody-here", "unknown_user": "raise"})
    assert got.status_code == 404 and "nobody-here" in _error(got)
    got = client.post("/recommend", json={"user_id": "nobody-here"})  # fallback: popularity
    assert got.status_code == 200 and got.json()["items"]
    got = client.post("/recommend", json={"history": ["NOPE-1"]})
    assert got.status_code == 404 and "NOPE-1" in _error(got)
    got = client.get("/items/NOPE-1")
    assert got.status_code == 404 and "NOPE-1" in _error(got)


def test_items_and_bundles(client: TestClient) -> None:
    engine: Engine = client.app.state.holder.current.engine  # type: ignore[attr-defined]
    item_id = engine.retriever.catalog.item_ids[0]
    row = client.get(f"/items/{item_id}").json()
    assert row["item_id"] == item_id and row["title"] == engine.retriever.catalog.titles[0]
    assert {"price", "category"} <= set(row)
    got = client.post("/bundle", json={"item": item_id, "size": [2, 3], "n": 2, "in_stock": False})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["bundles"] or body["reason"]
    for b in body["bundles"]:
        assert 2 <= len(b["items"]) <= 3 and item_id in [i["item_id"] for i in b["items"]]
    got = client.post("/bundle", json={"user_id": _user(client), "size": [3, 2]})
    assert got.status_code == 400 and _error(got)


def test_bundle_without_a_set_scorer_is_409(trained_artifact: Path) -> None:
    client = TestClient(create_app(Engine.load(trained_artifact), HttpConfig(warmup=False)), raise_server_exceptions=False)
    got = client.post("/bundle", json={"item": "x"})
    assert got.status_code in (404, 409) and _error(got)
    got = client.post("/bundle", json={"text": "camping"})
    assert got.status_code == 409 and "set scorer" in _error(got)
    assert client.get("/ready").json()["version"] is not None


def test_large_body_is_413(client: TestClient) -> None:
    big = {"text": "word " * 2000}
    got = client.post("/recommend", json=big)
    assert got.status_code == 413 and "4096 bytes" in _error(got)

    def chunks():  # no Content-Length: refused while it streams in
        for _ in range(10):
            yield b" " * 1000

    got = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert got.status_code == 413
    small = client.post("/recommend", content=iter([b'{"text": ', b'"coffee"}']), headers={"content-type": "application/json"})
    assert small.status_code == 200, small.text


def test_unexpected_errors_are_a_generic_500(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = client.app.state.holder.current.engine  # type: ignore[attr-defined]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(engine, "recommend", broken)
    got = client.post("/recommend", json={"text": "coffee"})
    assert got.status_code == 500 and "secret" not in got.text and _error(got).startswith("internal error")


def test_admin_needs_the_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECS_ADMIN_TOKEN", raising=False)
    got = client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert got.status_code == 403 and "RECS_ADMIN_TOKEN" in _error(got)
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    assert client.post("/admin/reload").status_code == 401
    got = client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert got.status_code == 401 and got.headers["www-authenticate"] == "Bearer"
    assert client.post("/admin/reload", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_reload_swaps_while_a_request_finishes_on_the_old_model(model_dir: Path, onnx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    client = TestClient(create_app(model_dir), raise_server_exceptions=False)
    old = client.get("/ready").json()
    engine = client.app.state.holder.current.engine  # type: ignore[attr-defined]
    entered, release = threading.Event(), threading.Event()
    original = engine.recommend

    def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "recommend", slow)
    answers: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: answers.append(client.post("/recommend", json={"text": "tent", "k": 3})))
    worker.start()
    assert entered.wait(30)
    got = client.post("/admin/reload", json={"path": str(onnx_dir)}, headers=auth)
    assert got.status_code == 200, got.text
    swapped = client.get("/ready").json()
    assert swapped["backend"] == "onnx" and swapped["version"] != old["version"] and got.json()["previous_version"] == old["version"]
    fresh = client.post("/recommend", json={"text": "tent", "k": 3}).json()
    assert fresh["model_version"] == swapped["version"]
    release.set()
    worker.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["model_version"] == old["version"]
    # A failed load keeps the model being served and says why.
    bad = client.post("/admin/reload", json={"path": str(model_dir.parent / "missing")}, headers=auth)
    assert bad.status_code == 400 and "reload failed" in _error(bad) and bad.json()["serving"] == swapped["version"]
    assert client.get("/ready").json() == swapped
    # Without a path: the folder being served, loaded again.
    again = client.post("/admin/reload", headers=auth)
    assert again.status_code == 200 and again.json()["path"] == str(onnx_dir.absolute())
    text = client.get("/metrics").text
    assert 'recs_reloads_total{outcome="ok"} 2.0' in text and 'recs_reloads_total{outcome="failed"} 1.0' in text
    assert f'version="{swapped["version"]}"' in text and f'version="{old["version"]}"' not in text


def test_workers_follow_a_reload_through_the_pointer_file(model_dir: Path, onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recs serve --workers N`: the worker that reloads writes the pointer; the others follow it."""
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    pointer = tmp_path / "model.json"
    pointer.write_text(json.dumps({"path": str(model_dir.absolute()), "version": None}))
    first, second = (TestClient(create_app(model_dir, pointer=pointer)) for _ in range(2))
    old = second.get("/ready").json()
    got = first.post("/admin/reload", json={"path": str(onnx_dir)}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert got.status_code == 200 and json.loads(pointer.read_text())["path"] == str(onnx_dir.absolute())
    deadline = time.monotonic() + 60
    while (now := second.get("/ready").json())["backend"] != "onnx":
        assert now == old and time.monotonic() < deadline  # the old model serves while the new one loads
        time.sleep(0.05)
    assert now == first.get("/ready").json()
    assert 'backend="onnx"' in second.get("/metrics").text


def test_metrics_count_requests_and_degraded_answers(client: TestClient) -> None:
    user = _user(client)
    client.get("/items/NOPE-2")
    degraded = client.post("/recommend", json={"user_id": user, "k": 5, "rerank": True, "rerank_top": 20, "time_budget_ms": 0})
    assert degraded.status_code == 200 and degraded.json()["degraded"] is True
    assert all("cross_encoder" not in i["stages"] for i in degraded.json()["items"])
    got = client.get("/metrics")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    text = got.text
    assert 'recs_requests_total{endpoint="/recommend",method="POST",status="200"}' in text
    assert 'recs_requests_total{endpoint="/items/{item_id:path}",method="GET",status="404"}' in text
    assert 'recs_request_seconds_bucket{endpoint="/recommend",le="0.05",method="POST"}' in text
    assert 'recs_degraded_answers_total{endpoint="/recommend"}' in text
    assert 'recs_model_info{backend="torch"' in text


def test_concurrent_requests_all_answer(client: TestClient) -> None:
    user = _user(client)
    bodies = [{"user_id": user, "k": 5}, {"text": "coffee", "k": 4}, {"user_id": user, "in_stock": True, "k": 3},
              {"user_id": user, "price_min": 1, "k": 3, "rerank": False}, {"user_id": user, "novelty": True, "k": 3}]
    statuses: list[int] = []

    def run(i: int) -> None:
        for j in range(4):
            statuses.append(client.post("/recommend", json=bodies[(i + j) % len(bodies)]).status_code)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert statuses == [200] * 24


def test_onnx_export_is_served(onnx_dir: Path) -> None:
    client = TestClient(create_app(onnx_dir), raise_server_exceptions=False)
    assert client.get("/ready").json()["backend"] == "onnx"
    got = client.post("/recommend", json={"text": "camping tent", "k": 4})
    assert got.status_code == 200 and len(got.json()["items"]) == 4
    item_id = got.json()["items"][0]["item_id"]
    assert client.get(f"/items/{item_id}").json()["item_id"] == item_id
    assert client.post("/bundle", json={"item": item_id, "in_stock": False}).status_code == 200


def test_the_onnx_service_never_imports_torch(onnx_dir: Path) -> None:
    code = f"""
import json, sys
for name in ("torch", "transformers", "lightgbm", "sklearn", "onnx", "onnxmltools"):
    sys.modules[name] = None  # importing any of them now raises ImportError
from fastapi.testclient import TestClient
from recs.serving.app import create_app
client = TestClient(create_app({str(onnx_dir)!r}))
answers = [client.post("/recommend", json={{"text": "tea", "k": 3}}).status_code,
           client.post("/bundle", json={{"text": "tea", "in_stock": False}}).status_code,
           client.get("/metrics").status_code]
loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("torch", "transformers", "lightgbm"))
print(json.dumps({{"answers": answers, "loaded": loaded}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"answers": [200, 200, 200], "loaded": []}


def test_serving_http_config_section(tmp_path: Path) -> None:
    path = tmp_path / "recs.toml"
    path.write_text('[serving.http]\nport = 9001\nmax_k = 50\n')
    http = load_config(path).serving.http
    assert http.port == 9001 and http.max_k == 50 and http.host == "127.0.0.1"
    path.write_text('[serving.http]\nmax_kk = 50\n')
    with pytest.raises(Exception, match="max_kk"):
        load_config(path)


def test_recs_serve_refuses_bad_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recs.cli import app as cli

    got = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path), "--port", "70000"])
    assert got.exit_code == 2 and "port" in got.output
    got = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path), "--workers", "0"])
    assert got.exit_code == 2 and "workers" in got.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_recs_serve_runs_the_real_server(onnx_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECS_ADMIN_TOKEN": TOKEN}
    # A second version of the same export (the manifest's `created` is the version; no file hashes it).
    newer = Path(shutil.copytree(onnx_dir, tmp_path / "newer"))
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "created": "2099-01-01T00:00:00Z"}))
    bad = subprocess.run([sys.executable, "-m", "recs.cli", "serve", "--model", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 4 and "not found" in bad.stderr and "Traceback" not in bad.stderr
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "recs.cli", "serve", "--model", str(onnx_dir), "--port", str(port), "--workers", "2"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        ready_in_a_row = 0  # each of the 2 workers answers /ready for itself: one 200 is one worker
        while ready_in_a_row < 10:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                ok = httpx.get(f"{base}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            ready_in_a_row = ready_in_a_row + 1 if ok else 0
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.02 if ok else 0.2)
        while (got := httpx.post(f"{base}/recommend", json={"text": "coffee", "k": 3}, timeout=30)).status_code == 503:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()  # a worker still loading
            time.sleep(0.2)
        assert got.status_code == 200 and len(got.json()["items"]) == 3
        reload = httpx.post(f"{base}/admin/reload", json={"path": str(newer)}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert reload.status_code == 200, reload.text
        # Both workers end on the new model: the one that reloaded, and the other through the pointer.
        streak, deadline = 0, time.monotonic() + 60
        while streak < 8:
            version = httpx.get(f"{base}/ready", timeout=5).json()["version"]
            streak = streak + 1 if version == "2099-01-01T00:00:00Z" else 0
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        for _ in range(5):
            assert httpx.post(f"{base}/recommend", json={"text": "tea", "k": 2}, timeout=30).status_code == 200
        text = httpx.get(f"{base}/metrics", timeout=5).text  # every worker's counts, summed
        assert 'recs_requests_total{endpoint="/recommend",method="POST",status="200"} 6.0' in text, text
        while text.count('version="2099-01-01T00:00:00Z"') < 2:  # each worker's model info: both follow
            assert time.monotonic() < deadline + 30, text
            time.sleep(0.2)
            text = httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_bundles_are_distinct_and_the_overlap_is_an_option(client: TestClient) -> None:
    """Issue 16, part 3: the bundles of one answer share at most one non-anchor item by default."""
    user = _user(client)
    for body in ({"user_id": user, "n": 4, "size": [2, 4]}, {"user_id": user, "n": 4, "size": [2, 4], "max_shared": 0}):
        answer = client.post("/bundle", json=body)
        assert answer.status_code == 200, answer.text
        sets = [{i["item_id"] for i in b["items"]} for b in answer.json()["bundles"]]
        limit = body.get("max_shared", 1)
        assert all(len(a & b) <= limit for n, a in enumerate(sets) for b in sets[n + 1:])
    bad = client.post("/bundle", json={"user_id": user, "max_shared": -1})
    assert bad.status_code == 400 and "max_shared" in _error(bad)
