"""The checks of a request's arguments (Engine.recommend / Engine.bundle, and the `query` and
`bundle` commands, which call the same functions to fail before loading a model). Each raises
ConfigError naming the argument; filters are checked by `recs.retrieval.filters`, options by
`RankOptions`, bundle sizes and budgets by `BundleConstraints`, unknown ids where they are looked up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast, get_args

from recs.configmodel import UnknownUserPolicy
from recs.errors import ConfigError

__all__ = ["POLICIES", "check_ids", "check_non_negative_int", "check_pair", "check_policy", "check_positive_int"]

POLICIES: tuple[str, ...] = get_args(UnknownUserPolicy)


def check_policy(value: Any, name: str = "unknown_user") -> UnknownUserPolicy | None:
    """An unknown-user policy, or None (the model's configured one)."""
    if value is not None and value not in POLICIES:
        raise ConfigError(f"{name} must be one of {', '.join(POLICIES)}; got {value!r}")
    return cast("UnknownUserPolicy | None", value)


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def check_pair(value: Any, name: str) -> tuple[Any, Any]:
    """A (low, high) pair, e.g. a bundle size range; its values are checked where they are used."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{name} must be a (min, max) pair, got {value!r}"[:200])
    return value[0], value[1]


def check_ids(values: Sequence[Any] | None, name: str) -> list[str] | None:
    """Item ids as given (a list of non-empty strings), or None. Ids are strings everywhere in
    recs (the catalog's are), so a number is refused rather than guessed at."""
    if values is None:
        return None
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ConfigError(f"{name} must be a list of item ids, got {type(values).__name__} {values!r}"[:200])
    for position, value in enumerate(values):
        if not isinstance(value, str):
            hint = f" (item ids are strings: pass '{value}')" if isinstance(value, int) and not isinstance(value, bool) else ""
            raise ConfigError(f"{name}[{position}] must be an item id string, got {value!r}{hint}")
        if not value.strip():
            raise ConfigError(f"{name}[{position}] is an empty item id")
    return list(values)
