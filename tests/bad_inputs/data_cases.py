"""Bad-input cases: data files (items, events, bundles). See `tests/bad_inputs/case.py`."""

from __future__ import annotations

from collections.abc import Callable

from tests.bad_inputs.case import CliCase, Workspace


def _replace(name: str, text: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        (ws.shop / name).write_text(text, encoding="utf-8")

    return setup


CASES: list[CliCase] = [
    CliCase("items-missing-title-column", ("data", "validate", "{shop}/items.csv"), 2,
            ("items.csv", "title", "missing"), setup=_replace("items.csv", "item_id,price\nA,1.0\n")),
]
