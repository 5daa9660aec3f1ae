"""The page at `/` (recs.serving.page): its read routes through the app, then the page itself in
real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium) against the
real service: a user's history, recommendations (as POST /recommend gives them), the discover
shelf and a bundle are shown; a screenshot lands in build/page.png; "bought" records a purchase."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from recs.config import HttpConfig
from recs.serving.app import create_app
from tests.conftest import copy_with_set_scorer

REPO = Path(__file__).resolve().parents[1]
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 30


@pytest.fixture(scope="module")
def page_model(trained_artifact: Path, small_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained towers with a set scorer (so the page shows a bundle)."""
    return copy_with_set_scorer(trained_artifact, tmp_path_factory.mktemp("page") / "model", small_demo_dir)


@pytest.fixture(scope="module")
def client(page_model: Path) -> TestClient:
    return TestClient(create_app(page_model, HttpConfig(max_history=100, warmup=False, events="off")), raise_server_exceptions=False)


def test_the_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text and "http://" not in page.text and "https://" not in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert ".innerHTML" not in script.text and "HTML(" not in script.text  # data goes in as textContent only
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    for bad in ("/static/nope.js", "/static/..%2Fpage.py", "/static/page.py"):
        got = client.get(bad)
        assert got.status_code == 404 and set(got.json()) == {"error"}, bad
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not an API route


def test_users_lists_known_ids_sorted_and_capped(client: TestClient) -> None:
    store = client.app.state.holder.current.engine.retriever.users  # type: ignore[attr-defined]
    everyone = sorted(store.user_ids())
    got = client.get("/users", params={"limit": 5}).json()
    assert got == {"users": everyone[:5], "total": len(everyone)}
    prefix = everyone[0][:-1]
    matching = [u for u in everyone if u.startswith(prefix)]
    assert client.get("/users", params={"prefix": prefix, "limit": 1000}).json() == {"users": matching, "total": len(matching)}
    assert client.get("/users", params={"prefix": "no-such-user-"}).json() == {"users": [], "total": 0}
    too_many = client.get("/users", params={"limit": 1001})
    assert too_many.status_code == 422 and too_many.json()["error"].startswith("limit: at most 1000")
    assert client.get("/users", params={"limit": 0}).status_code == 422


def test_history_reads_the_user_store_with_titles_and_prices(client: TestClient) -> None:
    retriever = client.app.state.holder.current.engine.retriever  # type: ignore[attr-defined]
    user = sorted(retriever.users.user_ids(), key=lambda u: (-len(retriever.users.arrays(u).rows), u))[0]
    arrays = retriever.users.arrays(user)
    got = client.get(f"/users/{user}/history", params={"limit": 3}).json()
    assert got["user_id"] == user and got["total"] == len(arrays.rows) and len(got["events"]) == 3
    newest = got["events"][0]
    row = int(arrays.rows[-1])
    assert newest["item_id"] == retriever.catalog.item_ids[row] and newest["title"] == retriever.catalog.titles[row]
    assert newest["price"] == pytest.approx(float(retriever.items["price"][row]))
    assert newest["event"] in {"view", "click", "cart", "purchase"} and newest["timestamp"].endswith("+00:00")
    stamps = [e["timestamp"] for e in got["events"]]
    assert stamps == sorted(stamps, reverse=True)
    # An event added since the model was loaded (what POST /events does) shows first.
    item = retriever.catalog.item_ids[0]
    retriever.add_events(user, [(item, "purchase", retriever.now + 60)])
    after = client.get(f"/users/{user}/history", params={"limit": 1}).json()
    assert after["total"] == got["total"] + 1
    assert (after["events"][0]["item_id"], after["events"][0]["event"]) == (item, "purchase")
    # A new user (first seen through an event) with an id holding a slash.
    retriever.add_events("web/visitor 1", [(item, "view", retriever.now)])
    assert client.get("/users/web%2Fvisitor%201/history").json()["events"][0]["item_id"] == item
    assert client.get("/users/web/visitor 1/history").json()["total"] == 1


def test_history_errors(client: TestClient) -> None:
    unknown = client.get("/users/nobody-here/history")
    assert unknown.status_code == 404 and unknown.json() == {"error": "unknown user 'nobody-here' (no events in the served model)"}
    too_many = client.get("/users/x/history", params={"limit": 101})
    assert too_many.status_code == 422 and "serving.http.max_history" in too_many.json()["error"]


# -- the page in a real browser ---------------------------------------------------------------


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not (shutil.which("chromium") and os.path.exists(CHROMEDRIVER)):
        return "Debian's chromium and chromium-driver are not installed (`make test` installs them)"
    return None


browser = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(page_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`recs serve` in a subprocess; yields its base URL."""
    port, logs = _free_port(), tmp_path_factory.mktemp("page-serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}
    with logs.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "recs.cli", "serve", "--model", str(page_model), "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
            while True:
                assert proc.poll() is None, logs.read_text()
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, logs.read_text()
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(30)


@pytest.fixture(scope="module")
def driver(service: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    chrome.set_page_load_timeout(WAIT_S)
    try:
        yield chrome
    finally:
        chrome.quit()


def _shown_for(driver: Any, user: str) -> None:
    """Waits until the page has answered for `user` (on a timeout, says what the page shows)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.execute_script("return document.body.dataset.state === 'ready' && document.body.dataset.user === arguments[0]", user)
        )
    except TimeoutException:
        state = driver.execute_script("return [document.body.dataset.state, document.body.dataset.user]")
        pytest.fail(f"the page did not answer for {user!r} in {WAIT_S} s: state/user {state}, status "
                    f"{driver.find_element(By.ID, 'status').text!r}, url {driver.current_url}")


def _texts(driver: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def _known_user(base: str) -> str:
    return httpx.get(f"{base}/users", params={"limit": 1}, timeout=10).json()["users"][0]


@browser
def test_the_page_shows_a_users_history_recommendations_and_bundle(service: str, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    user = _known_user(service)
    driver.get(f"{service}/")
    WebDriverWait(driver, WAIT_S).until(lambda d: len(Select(d.find_element(By.ID, "user-list")).options) > 1)
    Select(driver.find_element(By.ID, "user-list")).select_by_value(user)
    _shown_for(driver, user)

    expected = httpx.post(f"{service}/recommend", json={"user_id": user, "k": 10}, timeout=30).json()["items"]
    assert _texts(driver, "#recs li .title") == [i["title"] for i in expected]
    assert _texts(driver, "#recs li .price") == [f"{i['price']:.2f}" for i in expected]
    assert all(_texts(driver, "#recs li .reason")) and len(_texts(driver, "#recs li button.buy")) == len(expected)
    history = httpx.get(f"{service}/users/{user}/history", params={"limit": 20}, timeout=10).json()["events"]
    assert _texts(driver, "#history tbody td.title") == [e["title"] for e in history]
    assert _texts(driver, "#history tbody td.kind") == [e["event"] for e in history]
    discover = httpx.post(f"{service}/recommend", json={"user_id": user, "k": 10, "novelty": True}, timeout=30).json()["items"]
    assert _texts(driver, "#discover li .title") == [i["title"] for i in discover]
    bundles = httpx.post(f"{service}/bundle", json={"user_id": user, "n": 3}, timeout=30).json()["bundles"]
    assert bundles, "the set scorer composes a bundle for this user"
    # Every bundle POST /bundle returns, in order, with its items, reasons and total price.
    assert _texts(driver, "#bundle li .title") == [i["title"] for b in bundles for i in b["items"]]
    assert all(_texts(driver, "#bundle li .reason"))
    assert len(_texts(driver, "#bundle .total")) == len(bundles)
    assert driver.find_element(By.ID, "status").text == ""

    shot = REPO / "build" / "page.png"
    shot.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # A typed id the model does not know: said so, and the fallback is shown.
    field = driver.find_element(By.ID, "user-id")
    field.clear()
    field.send_keys("nobody-<b>here</b>")
    driver.find_element(By.ID, "show").click()
    _shown_for(driver, "nobody-<b>here</b>")
    assert "Unknown user 'nobody-<b>here</b>'" in driver.find_element(By.ID, "status").text  # as text, not markup
    assert _texts(driver, "#recs li .title") and not _texts(driver, "#history tbody tr")


@browser
def test_bought_records_a_purchase_and_the_lists_follow(service: str, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    probe = httpx.post(f"{service}/events", json={"events": []}, timeout=10)
    if probe.status_code in (404, 405, 409):
        pytest.skip(f"this service records no events (POST /events: {probe.status_code}): 'bought' has nothing to call")
    user = _known_user(service)
    driver.get(f"{service}/#user={user}")
    _shown_for(driver, user)
    shelf = driver.find_elements(By.CSS_SELECTOR, "#discover li")
    assert shelf, "the discover shelf has items new to this user"
    item_id, title = shelf[0].get_attribute("data-item-id"), shelf[0].find_element(By.CSS_SELECTOR, ".title").text
    before = len(driver.find_elements(By.CSS_SELECTOR, "#history tbody tr"))
    driver.execute_script("document.body.dataset.user = ''")  # so that waiting sees the page answer again
    shelf[0].find_element(By.CSS_SELECTOR, "button.buy").click()
    _shown_for(driver, user)
    assert driver.find_element(By.ID, "status").text == f"Recorded: {user} bought '{title}'. History and lists are updated."
    first = driver.find_element(By.CSS_SELECTOR, "#history tbody tr")
    assert (first.get_attribute("data-item-id"), first.find_element(By.CSS_SELECTOR, ".kind").text) == (item_id, "purchase")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")) >= min(before + 1, 20)
    # Bought, it is no longer new to the user: it leaves the discover shelf.
    assert item_id not in [e.get_attribute("data-item-id") for e in driver.find_elements(By.CSS_SELECTOR, "#discover li")]
    expected = httpx.post(f"{service}/recommend", json={"user_id": user, "k": 10}, timeout=30).json()["items"]
    assert _texts(driver, "#recs li .title") == [i["title"] for i in expected]
