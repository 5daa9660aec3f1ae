"""Ray, the optional engine for batch work: imported only here, and only when asked for."""

from __future__ import annotations

import logging
from typing import Any

from recs.errors import ConfigError


def ray_module() -> Any:
    """The `ray` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("Ray is not installed: pip install 'recs[distributed]' (or drop --ray)") from exc
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Ray, started: `address` None = a local instance (`num_cpus` of this machine), else the
    cluster there ("auto", "ray://host:10001", "host:6379"). An already running Ray is reused."""
    ray = ray_module()
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return ray


def ray_data(ray: Any) -> Any:
    """`ray.data`, its per-stage INFO lines (which drown a command's output) turned down: set
    after the import, which configures its loggers."""
    data = ray.data
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor", "ray.data._internal.progress"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return data
