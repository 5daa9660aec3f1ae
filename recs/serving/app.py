"""The HTTP service: `create_app(engine_or_path, settings)` -> a FastAPI app over one Engine.

    GET  /health          the process answers
    GET  /ready           a model is loaded: its version (manifest `created`) and path
    POST /recommend       Engine.recommend: user_id | history | text, k, filters, options
    POST /bundle          Engine.bundle
    GET  /items/{id}      the catalog row (an id may hold a slash)
    POST /events          append events to the event store (durable before the answer), served next request
    DELETE /users/{id}    forget a user: their events leave the store and the served state (bearer token)
    PUT  /items/{id}      add or replace an item, served from the next request (bearer token)
    DELETE /items/{id}    remove a discontinued item (bearer token)
    POST /admin/reload    load a model, then swap it in (bearer token)
    GET  /metrics         Prometheus text format
    GET  /docs            OpenAPI
    GET  /                the page to try it (recs.serving.page: also /users, /users/{id}/history)

Endpoints that call the engine are sync: FastAPI runs them in its threadpool. Each request reads
the served model once (`ModelHolder.current`), so a reload swaps the reference for the next
requests while the ones in flight finish on the model they started with (recs.serving.holder,
which also keeps the workers of `recs serve --workers N` on one model). With an event store
(recs.serving.eventstore), every model is brought up to the store before it is served and synced
before each request (recs.serving.feedback): events, forgets and item changes reach every worker
that way.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from recs.config import HttpConfig
from recs.data.schema import ITEMS_SCHEMA
from recs.errors import RecsError, UnknownItemError
from recs.serving.engine import Engine
from recs.serving.eventstore import EventStore, NewEvent, default_store_path, open_store
from recs.serving.feedback import StoreFollower, record_events
from recs.serving.holder import ModelHolder, Served, load_served, warm
from recs.serving.httpkit import (
    BodyLimit,
    HttpError,
    Metrics,
    check_admin,
    install_error_handlers,
    limit_error,
)
from recs.serving.items import apply_changes, apply_recorded, changes_from_fields, item_change
from recs.serving.onnx_runtime import RuntimeOptions
from recs.serving.page import page_router
from recs.serving.schemas import (
    BundleRequest,
    BundleResponse,
    ErrorBody,
    EventsRequest,
    EventsResponse,
    ForgetResponse,
    Health,
    ItemChangeResponse,
    ItemIn,
    ItemOut,
    Ready,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
)

__all__ = ["create_app"]

log = logging.getLogger("recs.serving")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 413, 422, 500, 503)
}


def _check_limits(body: RecommendRequest | BundleRequest, http: HttpConfig) -> None:
    k = getattr(body, "k", None)
    if k is not None and k > http.max_k:
        raise limit_error("k", f"at most {http.max_k} items per request (serving.http.max_k), got {k}")
    for name in ("history", "exclude", "items", "allow_same_leaf"):
        values = getattr(body, name, None)
        if values is not None and len(values) > http.max_history:
            raise limit_error(name, f"at most {http.max_history} ids (serving.http.max_history), got {len(values)}")
    if body.text is not None and len(body.text) > http.max_text_chars:
        raise limit_error("text", f"at most {http.max_text_chars} characters (serving.http.max_text_chars), got {len(body.text)}")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)  # dates, decimals: as text


def store_for(model: Engine | str | Path, spec: str) -> EventStore | None:
    """The event store `[serving.http] events` names for `model` ("auto": beside its folder)."""
    if spec == "off":
        return None
    if spec == "auto":
        path = model.path if isinstance(model, Engine) else Path(model)
        return open_store(default_store_path(path)) if path is not None else None
    return open_store(spec)


def create_app(
    engine_or_path: Engine | str | Path,
    settings: HttpConfig | None = None,
    runtime: RuntimeOptions | None = None,
    *,
    pointer: Path | None = None,
    background: bool = False,
    store: EventStore | None = None,
) -> FastAPI:
    """The service over an Engine (served as is) or an artifact folder: loaded now, or with
    `background` in a thread (GET /health answers at once, the model's routes say 503 until it is
    in). `pointer`: the file through which the workers of one service follow each other's reloads
    (recs.serving.holder). `store`: the event store (default: what `settings.events` names)."""
    http = settings or HttpConfig()
    store = store if store is not None else store_for(engine_or_path, http.events)
    follower = StoreFollower(store, apply_recorded) if store is not None else None
    served: Served | None = None
    if isinstance(engine_or_path, Engine):
        engine = engine_or_path
        if follower is not None:
            follower.attach(engine)
        if http.warmup:
            warm(engine)
        served = Served(engine, engine.created, engine.path)
    elif not background:
        served = load_served(engine_or_path, runtime, http.warmup)
        if follower is not None:
            follower.attach(served.engine)
    holder = ModelHolder(served, runtime, http.warmup, pointer)
    if follower is not None:
        holder.prepare.append(lambda s: follower.attach(s.engine))
    if http.watch:
        holder.watch(http.watch_interval_s)
    metrics = Metrics()
    holder.on_swap.append(metrics.set_model)
    if served is not None:
        metrics.set_model(served)

    def model() -> Served:
        s = holder.current
        if s is None:
            raise HttpError(503, f"no model yet: {holder.load_error or 'still loading'}")
        if follower is not None:
            follower.sync(s.engine)  # what other workers (or this one) stored since
        return s

    def event_store() -> EventStore:
        if store is None:
            raise HttpError(409, "this service has no event store ([serving.http] events = \"off\")")
        return store

    app = FastAPI(
        title="recs", summary="Recommendations, bundles and the catalog of one recs model.",
        version=served.version if served and served.version else "unknown", responses=ERRORS,
    )
    app.state.holder, app.state.metrics, app.state.http = holder, metrics, http
    app.state.store, app.state.follower = store, follower
    if served is None:
        holder.load_in_background(engine_or_path)  # type: ignore[arg-type]  # a path here
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=http.max_body_bytes)  # type: ignore[arg-type]
    metrics.install(app)  # added last: outermost, so a 413 or a 500 is counted too

    @app.get("/health", response_model=Health, summary="The process answers")
    def health() -> Health:
        return Health(status="ok")

    @app.get("/ready", response_model=Ready, summary="A model is loaded (503 until then)")
    def ready() -> Ready:
        s = model()
        return Ready(ready=True, version=s.version, path=str(s.path) if s.path else None, backend=s.backend)

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=False, summary="Top-k items")
    def recommend(body: RecommendRequest) -> RecommendResponse:
        _check_limits(body, http)
        s = model()
        results = s.engine.recommend(
            user_id=body.user_id, k=body.k, history=body.history, text=body.text, category=body.category,
            price_min=body.price_min, price_max=body.price_max, in_stock=body.in_stock,
            exclude_bought=body.exclude_bought, exclude=body.exclude, unknown_user=body.unknown_user,
            **body.overrides(),
        )
        if results.degraded:
            metrics.degraded.labels("/recommend").inc()
        items = [
            ItemOut(**{**r.to_dict(), "features": r.features if body.include_features else None}) for r in results
        ]
        return RecommendResponse(items=items, degraded=bool(results.degraded),
                                 timings_ms=dict(getattr(results, "timings_ms", {}) or {}), model_version=s.version)

    @app.post("/bundle", response_model=BundleResponse, summary="Complementary bundles")
    def bundle(body: BundleRequest) -> BundleResponse:
        _check_limits(body, http)
        s = model()
        bundles = s.engine.bundle(
            body.user_id, item=body.item, items=body.items, size=body.size, budget=body.budget, n=body.n,
            in_stock=body.in_stock, exclude=body.exclude, allow_same_leaf=body.allow_same_leaf,
            history=body.history, text=body.text, unknown_user=body.unknown_user, max_shared=body.max_shared,
        )
        return BundleResponse(bundles=[b.to_dict() for b in bundles], reason=bundles.reason, model_version=s.version)

    @app.get("/items/{item_id:path}", summary="An item's catalog row")
    def item(item_id: str) -> dict[str, Any]:
        r = model().engine.retriever
        row = r.catalog.row_of.get(item_id)
        if row is None:
            raise UnknownItemError(f"unknown item id '{item_id}'"[:300])
        return {name: _json_value(value) for name, value in r.items.row(row, named=True).items()}

    @app.post("/events", response_model=EventsResponse, summary="Record events (stored before the answer)")
    def events(body: EventsRequest) -> EventsResponse:
        if len(body.events) > http.max_events:
            raise limit_error("events", f"at most {http.max_events} events per request (serving.http.max_events), got {len(body.events)}")
        target = event_store()
        s = model()
        batch = [NewEvent(e.user_id, e.item_id, e.event, e.epoch_seconds(), e.basket_id) for e in body.events]
        done = record_events(target, s.engine, batch)
        if follower is not None:
            follower.sync(s.engine)  # the user's next request (on this worker) sees them for sure
        metrics.events.inc(done.accepted)
        return EventsResponse(accepted=done.accepted, skipped=[{"index": i, "reason": r} for i, r in done.skipped], seq=done.seq)

    @app.delete("/users/{user_id:path}", response_model=ForgetResponse, summary="Forget a user (bearer token)")
    def forget(user_id: str, request: Request) -> ForgetResponse:
        check_admin(request, http.admin_token_env)
        s = model()
        known = s.engine.retriever.known_user(user_id)
        removed = 0
        if store is not None and follower is not None:
            removed = store.forget(user_id)
            follower.sync(s.engine)  # applied here as on every worker: through the store, once
        else:
            log.info("forget a user: no event store, the served state only")
            s.engine.retriever.forget_user(user_id)
        return ForgetResponse(user_id=user_id, events_removed=removed, known=known)

    def change_item(item_id: str, fields: dict[str, Any] | None) -> ItemChangeResponse:
        """With an event store the change is recorded (durably) and reaches this engine as it
        reaches every worker, through the store (`StoreFollower.sync`); without one it is applied
        here only. Either way the engine adopts a model built off to the side."""
        changes = changes_from_fields(item_id, fields)  # a bad field is refused before any work
        s = model()
        before = s.engine.retriever
        if fields is None and item_id not in before.catalog.row_of:
            raise UnknownItemError(f"unknown item id '{item_id}'"[:300])
        if store is not None and follower is not None:
            store.put_item(item_id, fields)
            follower.sync(s.engine)
        else:
            apply_changes(s.engine, changes)
        done = item_change(before, s.engine.retriever, item_id, removed=fields is None)
        if done is None:
            raise HttpError(500, f"item '{item_id}' was recorded but could not be applied: see the service's log"[:300])
        return done

    @app.put("/items/{item_id:path}", response_model=ItemChangeResponse, summary="Add or replace an item (bearer token)")
    def put_item(item_id: str, request: Request, body: ItemIn) -> ItemChangeResponse:
        check_admin(request, http.admin_token_env)
        # The whole item: the catalog's extra columns this body leaves out are emptied too.
        extra = (c for c in model().engine.retriever.items.columns if c not in ITEMS_SCHEMA)
        return change_item(item_id, {**dict.fromkeys(extra), **body.fields()})

    @app.delete("/items/{item_id:path}", response_model=ItemChangeResponse, summary="Remove a discontinued item (bearer token)")
    def delete_item(item_id: str, request: Request) -> ItemChangeResponse:
        check_admin(request, http.admin_token_env)
        return change_item(item_id, None)

    @app.post("/admin/reload", response_model=ReloadResponse, summary="Load a model and swap it in (bearer token)")
    def reload(request: Request, body: ReloadRequest | None = Body(default=None)) -> ReloadResponse:
        check_admin(request, http.admin_token_env)
        start = time.perf_counter()
        try:
            old, new = holder.reload(body.path if body else None)
        except (RecsError, OSError) as err:
            metrics.reloads.labels("failed").inc()
            current = holder.current
            serving = current.version if current else None
            log.warning("reload failed, still serving %s: %s", serving, err)
            # A model that cannot be loaded is the request's fault (400); a failing disk is not.
            raise HttpError(400 if isinstance(err, RecsError) else 500, f"reload failed: {err}".splitlines()[0],
                            serving=serving) from None
        metrics.reloads.labels("ok").inc()
        log.info("reloaded %s (was %s)", new.version, old.version)
        return ReloadResponse(version=new.version, path=str(new.path), previous_version=old.version,
                              load_ms=(time.perf_counter() - start) * 1000)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(page_router(model, http))  # GET /, /static/*, /users, /users/{id}/history

    return app
