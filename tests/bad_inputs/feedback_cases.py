"""Bad-input cases: the event store and the commands that read it (`refresh`, `forget`, `serve
--events`, `train --resume-from --events`). Each fails with one line before any work."""

from __future__ import annotations

from collections.abc import Callable

from tests.bad_inputs.case import CliCase, Workspace


def _write(name: str, text: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        (ws.tmp / name).write_text(text, encoding="utf-8")

    return setup


def _folder(name: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        (ws.tmp / name).mkdir()

    return setup


def _case(id: str, args: str, exit_code: int, words: tuple[str, ...], setup: Callable[[Workspace], None] | None = None) -> CliCase:
    return CliCase(id, tuple(args.split()), exit_code, words, setup=setup)


UNREACHABLE = "postgresql://shop:hunter2secret@127.0.0.1:9/recs"

CASES: list[CliCase] = [
    _case("refresh-store-is-a-folder", "refresh --model {model} --events {tmp}/store.sqlite", 4,
          ("cannot open the event store", "store.sqlite"), _folder("store.sqlite")),
    _case("refresh-store-not-sqlite", "refresh --model {model} --events {tmp}/store.sqlite", 4,
          ("store.sqlite", "not a database"), _write("store.sqlite", "user_id,item_id\nu1,i1\n" * 200)),
    _case("refresh-store-server-unreachable", f"refresh --model {{model}} --events {UNREACHABLE}", 4,
          ("event store", "127.0.0.1")),
    _case("refresh-model-not-an-artifact", "refresh --model {tmp}/plain --events {tmp}/s.sqlite", 4,
          ("plain",), _folder("plain")),
    _case("forget-model-missing", "forget --model {tmp}/nothing --user U0001", 4, ("nothing",)),
    _case("forget-store-is-a-folder", "forget --model {model} --user U0001 --events {tmp}/s.sqlite", 4,
          ("cannot open the event store",), _folder("s.sqlite")),
    _case("serve-store-is-a-folder", "serve --model {model} --events {tmp}/s.sqlite --port 1", 4,
          ("cannot open the event store",), _folder("s.sqlite")),
    _case("serve-watch-interval-zero", "serve --model {model} --config {tmp}/c.toml", 2,
          ("watch_interval_s",), _write("c.toml", "[serving.http]\nwatch = true\nwatch_interval_s = 0\n")),
]
