"""`recs serve`: uvicorn over `create_app`. uvicorn starts each worker from an import string, so
the model and the [serving] settings travel to `app_from_env` (the factory it imports) in
environment variables."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from fastapi import FastAPI

from recs.config import ServingConfig
from recs.errors import ConfigError
from recs.io import atomic_write_text

__all__ = ["ENV_MODEL", "ENV_POINTER", "ENV_SETTINGS", "app_from_env", "serve"]

ENV_MODEL = "RECS_SERVE_MODEL"
ENV_SETTINGS = "RECS_SERVE_SETTINGS"  # the [serving] section as JSON
ENV_POINTER = "RECS_SERVE_POINTER"  # with several workers: the file through which they follow reloads


def serve(model: Path, serving: ServingConfig) -> None:
    """Run the service until interrupted (blocking)."""
    import uvicorn

    from recs.artifacts import open_artifact
    from recs.serving.app import store_for

    artifact = open_artifact(model)  # a wrong folder fails here, once, not in every worker
    store = store_for(artifact.path, serving.http.events)  # and so does a store it cannot open
    if store is not None:
        store.close()
    os.environ[ENV_MODEL] = str(artifact.path)
    os.environ[ENV_SETTINGS] = serving.model_dump_json()
    http = serving.http
    with contextlib.ExitStack() as stack:
        if http.workers > 1:
            # Private to this service's workers (0700), gone when it stops: the reload pointer and
            # prometheus-client's multiprocess files. A killed service leaves a few bytes here.
            shared = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recs-serve-")))
            pointer = atomic_write_text(shared / "model.json", json.dumps({"path": str(artifact.path), "version": artifact.created}))
            os.environ[ENV_POINTER] = str(pointer)
            # Set before the workers import prometheus-client: /metrics then sums every worker.
            (shared / "metrics").mkdir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared / "metrics")
        uvicorn.run("recs.serving.serve:app_from_env", factory=True, host=http.host, port=http.port,
                    workers=http.workers, log_level="info")


def app_from_env() -> FastAPI:
    """The app `serve` described in the environment (one per uvicorn worker)."""
    from recs.serving.app import create_app
    from recs.serving.onnx_runtime import RuntimeOptions

    model = os.environ.get(ENV_MODEL)
    if not model:
        raise ConfigError(f"{ENV_MODEL} is not set: start the service with `recs serve --model DIR`")
    serving = ServingConfig.model_validate_json(os.environ.get(ENV_SETTINGS) or "{}")
    pointer = os.environ.get(ENV_POINTER)
    runtime = RuntimeOptions(precision=serving.precision, threads=serving.threads)
    return create_app(model, serving.http, runtime, pointer=Path(pointer) if pointer else None, background=True)
