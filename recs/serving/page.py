"""The page at `/` (a place to try the service in a browser) and the read routes it needs:

    GET /                              static/index.html
    GET /static/{name}                 its script and style (only the files shipped in static/)
    GET /users?limit=N&prefix=P        known user ids, for the picker
    GET /users/{id}/history?limit=N    a user's recent events with titles and prices

The page is plain HTML, JS and CSS (no build step, nothing fetched from elsewhere: it works
offline); everything it shows comes from the service's own JSON routes. Histories are read from
the served model's UserStore, so events posted since the model was loaded show up.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from recs.config import HttpConfig
from recs.errors import UnknownUserError
from recs.serving.holder import Served
from recs.serving.httpkit import HttpError, limit_error
from recs.serving.schemas import HistoryEvent, HistoryResponse, UsersResponse

__all__ = ["STATIC", "page_router"]

STATIC = Path(__file__).parent / "static"
_MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
MAX_USERS = 1000  # ids one /users answer may list


def _static(name: str) -> FileResponse:
    path = STATIC / name
    # Only a file shipped beside this module, by its bare name: no path leaves the folder.
    if "/" in name or "\\" in name or path.suffix not in _MEDIA or not path.is_file():
        raise HttpError(404, f"no static file '{name}'"[:200])
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers={"Cache-Control": "no-cache"})


def page_router(model: Callable[[], Served], http: HttpConfig) -> APIRouter:
    """The page's routes; `model()` is the served model of this request (503 while loading)."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return _static("index.html")

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        return _static(name)

    @router.get("/users", response_model=UsersResponse, summary="Known user ids (for the page's picker)")
    def users(limit: int = Query(default=50, ge=1), prefix: str = Query(default="", max_length=200)) -> UsersResponse:
        if limit > MAX_USERS:
            raise limit_error("limit", f"at most {MAX_USERS} user ids per request, got {limit}")
        ids = model().engine.retriever.users.user_ids()
        matching = [u for u in ids if u.startswith(prefix)] if prefix else ids
        return UsersResponse(users=heapq.nsmallest(limit, matching), total=len(matching))

    @router.get("/users/{user_id:path}/history", response_model=HistoryResponse, summary="A user's recent events")
    def history(user_id: str, limit: int = Query(default=50, ge=1)) -> HistoryResponse:
        if limit > http.max_history:
            raise limit_error("limit", f"at most {http.max_history} events (serving.http.max_history), got {limit}")
        r = model().engine.retriever
        store = r.users
        arrays = store.arrays(user_id)
        if arrays is None:
            raise UnknownUserError(f"unknown user '{user_id}' (no events in the served model)"[:300])
        prices = r.items["price"] if "price" in r.items.columns else None
        events = []
        for row, code, when in zip(arrays.rows[::-1][:limit].tolist(), arrays.kinds[::-1][:limit].tolist(),
                                   arrays.times[::-1][:limit].tolist(), strict=True):
            price = prices[row] if prices is not None else None
            price = float(price) if price is not None else None
            events.append(HistoryEvent(
                item_id=r.catalog.item_ids[row], title=r.catalog.titles[row], category=r.categories[row] or "",
                price=price if price is not None and math.isfinite(price) else None,
                event=store.kinds[code], timestamp=datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds"),
            ))
        return HistoryResponse(user_id=user_id, events=events, total=len(arrays.rows))

    return router
