"""What one bad-input case is, and the workspace its setup edits."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


class Workspace:
    """Fresh copies, made on first use, of what a case may break: the conftest shop (`shop`), the
    small demo shop (`demo`), the trained towers (`model`), the ranked artifact (`ranked`), and
    a scratch folder (`tmp`). A case edits its copies only."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        self._request = request
        self.tmp = tmp
        self._made: dict[str, Path] = {}

    def _copy(self, name: str, fixture: str) -> Path:
        if name not in self._made:
            source = Path(self._request.getfixturevalue(fixture))
            self._made[name] = Path(shutil.copytree(source, self.tmp / "copies" / name))
        return self._made[name]

    @property
    def shop(self) -> Path:
        return self._copy("shop", "shop_dir")

    @property
    def demo(self) -> Path:
        return self._copy("demo", "small_demo_dir")

    @property
    def model(self) -> Path:
        return self._copy("model", "trained_artifact")

    @property
    def ranked(self) -> Path:
        return self._copy("ranked", "ranked_artifact")

    def format(self, arg: str) -> str:
        """`{shop}`, `{demo}`, `{model}`, `{ranked}`, `{tmp}` in an argument become paths."""
        names = [n for n in ("shop", "demo", "model", "ranked", "tmp") if "{" + n + "}" in arg]
        return arg.format(**{n: getattr(self, n) for n in names}) if names else arg


@dataclass(frozen=True)
class CliCase:
    """`recs ARGS` after `setup(ws)` exits with `exit_code`, its output holds every one of `words`
    (case-insensitive) and no traceback. `subprocess=True` runs the installed CLI in a child
    process (for resource limits and signals); otherwise typer's in-process runner is used."""

    id: str
    args: tuple[str, ...]
    exit_code: int
    words: tuple[str, ...]
    setup: Callable[[Workspace], Any] | None = None
    slow: bool = False
    subprocess: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiCase:
    """`call(ws)` raises `error` whose message holds every one of `words` (case-insensitive)."""

    id: str
    call: Callable[[Workspace], Any]
    error: type[BaseException]
    words: tuple[str, ...]
    slow: bool = False


def write_file(name: str, text: str) -> Callable[[Workspace], None]:
    """A setup: `text` written to `{tmp}/name`."""
    def setup(ws: Workspace) -> None:
        (ws.tmp / name).write_text(text, encoding="utf-8")

    return setup


def make_folder(name: str) -> Callable[[Workspace], None]:
    """A setup: an empty folder `{tmp}/name` (where a file, or nothing, is expected)."""
    def setup(ws: Workspace) -> None:
        (ws.tmp / name).mkdir()

    return setup


def cli_case(id: str, args: str, exit_code: int, words: tuple[str, ...], setup: Callable[[Workspace], Any] | None = None) -> CliCase:
    """A CliCase from one argument string (split on spaces)."""
    return CliCase(id, tuple(args.split()), exit_code, words, setup=setup)
