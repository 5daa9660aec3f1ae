"""Bad-input cases: `recs items upsert` (an items file, removals, an event store). Each fails with
one line naming what is wrong (file, row, column; the id; the store) before the model is written."""

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


UPSERT = "items upsert --model {model}"

CASES: list[CliCase] = [
    _case("items-upsert-bad-price", f"{UPSERT} {{tmp}}/new.csv", 2, ("new.csv", "row 2", "price"),
          _write("new.csv", "item_id,title,price\nN1,Kettle,20\nN2,Teapot,cheap\n")),
    _case("items-upsert-no-title-column", f"{UPSERT} {{tmp}}/new.csv", 2, ("new.csv", "title"),
          _write("new.csv", "item_id,price\nN1,20\n")),
    _case("items-upsert-empty-title", f"{UPSERT} {{tmp}}/new.csv", 2, ("row 1", "title"),
          _write("new.csv", "item_id,title\nN1,\n")),
    _case("items-upsert-duplicate-id", f"{UPSERT} {{tmp}}/new.csv", 2, ("row 2", "duplicate"),
          _write("new.csv", "item_id,title\nN1,Kettle\nN1,Kettle again\n")),
    _case("items-upsert-header-only", f"{UPSERT} {{tmp}}/new.csv", 2, ("new.csv",), _write("new.csv", "item_id,title\n")),
    _case("items-upsert-file-missing", f"{UPSERT} {{tmp}}/absent.csv", 2, ("absent.csv",)),
    _case("items-upsert-remove-unknown", f"{UPSERT} --remove NOPE-1,NOPE-2", 3, ("nope-1",)),
    _case("items-upsert-nothing-to-do", UPSERT, 2, ("--remove",)),
    _case("items-upsert-model-missing", "items upsert --model {tmp}/nothing --remove X", 4, ("nothing",)),
    _case("items-upsert-model-not-an-artifact", "items upsert --model {tmp}/plain --remove X", 4, ("plain",), _folder("plain")),
    _case("items-upsert-store-is-a-folder", f"{UPSERT} --events {{tmp}}/s.sqlite", 4, ("cannot open the event store",),
          _folder("s.sqlite")),
]
