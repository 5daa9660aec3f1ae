"""Category paths ("Home > Kitchen > Knives"): the one owner of how they are split and compared.

Comparisons are case-insensitive and ignore spacing around ">" ("home>KITCHEN" is under "Home");
display keeps the shop's own spelling. Every filter (engine, FAISS index, SQL, OpenSearch) and every
feature that groups items by category goes through these functions.
"""

from __future__ import annotations

import numpy as np
import polars as pl

SEPARATOR = " > "


def segments(path: str | None) -> list[str]:
    """'Home >  Kitchen>Knives ' -> ['Home', 'Kitchen', 'Knives'] (empty segments dropped)."""
    if not path:
        return []
    return [part.strip() for part in str(path).split(">") if part.strip()]


def display(path: str | None) -> str:
    """The path with canonical spacing, the shop's case kept."""
    return SEPARATOR.join(segments(path))


def normalise(path: str | None) -> str:
    """The comparison key: canonical spacing, case-folded ('' for no category)."""
    return SEPARATOR.join(part.casefold() for part in segments(path))


def top(path: str | None) -> str:
    """The top-level category ('Home' for 'Home > Kitchen > Knives'; '' for none)."""
    parts = segments(path)
    return parts[0] if parts else ""


def leaf(path: str | None) -> str:
    """The last segment ('Knives' for 'Home > Kitchen > Knives'; '' for none)."""
    parts = segments(path)
    return parts[-1] if parts else ""


def is_under(path: str | None, prefix: str | None) -> bool:
    """Whether `path` is `prefix` or below it (case-insensitive; 'Home' is under 'home')."""
    want = normalise(prefix)
    have = normalise(path)
    return bool(want) and (have == want or have.startswith(want + SEPARATOR))


def codes(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(leaf code, top code) per path as int64 arrays, -1 for no category: the same path the
    same code, and paths with the same `top` the same top code (one pass per distinct path)."""
    distinct = {p: i for i, p in enumerate(dict.fromkeys(p for p in paths if p))}
    tops: dict[str, int] = {}
    top_of = {p: tops.setdefault(top(p), len(tops)) for p in distinct}
    leaf_codes = np.fromiter((distinct.get(p, -1) if p else -1 for p in paths), dtype=np.int64, count=len(paths))
    top_codes = np.fromiter((top_of[p] if p else -1 for p in paths), dtype=np.int64, count=len(paths))
    return leaf_codes, top_codes


def top_expr(column: pl.Expr) -> pl.Expr:
    """`top` as a polars expression (null for no category)."""
    return column.str.split(">").list.first().str.strip_chars()


def like_prefix(prefix: str) -> str:
    """`normalise(prefix)` + ' > %' with LIKE wildcards escaped: SQL's half of `is_under`, to be
    compared against `lower(category)` (paths are stored normalised for filtering)."""
    escaped = normalise(prefix).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + SEPARATOR + "%"
