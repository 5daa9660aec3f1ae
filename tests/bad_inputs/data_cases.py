"""Bad-input cases: data files (items, events, bundles). See `tests/bad_inputs/case.py`.

Every case edits the conftest shop (`{shop}`: 10 items T1 T2 S1 L1 C1 C2 M1 P1 P2 P3 in that
order, 17 events, 2 bundles) and runs a fast command: `data validate`, or `evaluate` with the
popularity baseline. Cases under `--on-bad-rows skip` write their report to `{tmp}`."""

from __future__ import annotations

from collections.abc import Callable

from tests.bad_inputs.case import CliCase, Workspace

Setup = Callable[[Workspace], None]

VALIDATE_ITEMS = ("data", "validate", "{shop}/items.csv")
VALIDATE_SHOP = ("data", "validate", "{shop}/items.csv", "{shop}/events.csv", "{shop}/bundles.csv")
EVALUATE = ("evaluate", "--data", "{shop}", "--model", "popularity", "--no-tune")
EVALUATE_SKIP = (*EVALUATE, "--on-bad-rows", "skip", "--skip-report", "{tmp}/skipped.csv")


def _replace(name: str, text: str) -> Setup:
    def setup(ws: Workspace) -> None:
        (ws.shop / name).write_text(text, encoding="utf-8")

    return setup


def _write_bytes(name: str, data: bytes) -> Setup:
    def setup(ws: Workspace) -> None:
        (ws.shop / name).write_bytes(data)

    return setup


def _edit(name: str, old: str, new: str, count: int = 1) -> Setup:
    """Replace `old` (which must be there) by `new` in a shop file; count=-1: everywhere."""

    def setup(ws: Workspace) -> None:
        path = ws.shop / name
        text = path.read_text(encoding="utf-8")
        if old not in text:
            raise ValueError(f"case setup: {old!r} not in {name}")
        path.write_text(text.replace(old, new, count), encoding="utf-8")

    return setup


def _remove(name: str) -> Setup:
    def setup(ws: Workspace) -> None:
        (ws.shop / name).unlink()

    return setup


def _copy_as(name: str, new_name: str, separator: str | None = None) -> Setup:
    """A second copy of a shop file under another name (optionally re-separated)."""

    def setup(ws: Workspace) -> None:
        text = (ws.shop / name).read_text(encoding="utf-8")
        (ws.shop / new_name).write_text(text if separator is None else text.replace(",", separator), encoding="utf-8")

    return setup


def _both(first: Setup, second: Setup) -> Setup:
    def setup(ws: Workspace) -> None:
        first(ws)
        second(ws)

    return setup


def _every_title_empty(ws: Workspace) -> None:
    lines = (ws.shop / "items.csv").read_text(encoding="utf-8").splitlines()
    rows = [line.split(",") for line in lines[1:]]
    (ws.shop / "items.csv").write_text("\n".join([lines[0], *(",".join([r[0], "", *r[2:]]) for r in rows)]) + "\n")


CASES: list[CliCase] = [
    # ---- whole files: missing, empty, unreadable, unsupported
    CliCase("items-missing-title-column", VALIDATE_ITEMS, 2,
            ("items.csv", "title", "missing"), setup=_replace("items.csv", "item_id,price\nA,1.0\n")),
    CliCase("events-missing-timestamp-column", EVALUATE, 2, ("events.csv", "timestamp", "missing"),
            setup=_replace("events.csv", "user_id,item_id,event\nu1,T1,view\n")),
    CliCase("items-header-only-validate", VALIDATE_ITEMS, 2, ("items.csv", "no items", "header and no rows"),
            setup=_replace("items.csv", "item_id,title,price\n")),
    CliCase("items-header-only-evaluate", EVALUATE, 2, ("items.csv", "no items", "header and no rows"),
            setup=_replace("items.csv", "item_id,title,price\n")),
    CliCase("events-header-only-evaluate", EVALUATE, 2, ("events.csv", "no events", "header and no rows"),
            setup=_replace("events.csv", "user_id,item_id,timestamp,event\n")),
    CliCase("events-header-only-validate", VALIDATE_SHOP, 2, ("events.csv", "no events", "header and no rows"),
            setup=_replace("events.csv", "user_id,item_id,timestamp,event\n")),
    CliCase("bundles-header-only-warns", VALIDATE_SHOP, 0, ("warning", "bundles.csv", "no bundles"),
            setup=_replace("bundles.csv", "bundle_id,item_id,title\n")),
    CliCase("items-empty-file", VALIDATE_ITEMS, 2, ("items.csv", "file is empty"), setup=_replace("items.csv", "")),
    CliCase("items-not-utf8", VALIDATE_ITEMS, 2, ("items.csv line 2", "not valid utf-8", "re-encode"),
            setup=_write_bytes("items.csv", b"item_id,title\nA,Caf\xe9 beans\n")),
    CliCase("items-unsupported-extension", ("data", "validate", "{shop}/items.xlsx"), 2,
            ("items.xlsx", "unsupported file type .xlsx"), setup=_copy_as("items.csv", "items.xlsx")),
    CliCase("items-compressed", ("data", "validate", "{shop}/items.csv.gz"), 2, ("items.csv.gz", "compressed", "decompress"),
            setup=_write_bytes("items.csv.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00")),
    CliCase("several-items-files", EVALUATE, 2, ("several items files", "items.csv", "items.tsv", "keep one"),
            setup=_copy_as("items.csv", "items.tsv", "\t")),
    CliCase("events-file-missing", EVALUATE, 2, ("no events file", "events.csv"), setup=_remove("events.csv")),
    CliCase("data-folder-missing", ("evaluate", "--data", "{tmp}/no-such-shop", "--model", "popularity"), 2,
            ("no-such-shop", "data folder not found")),
    CliCase("items-jsonl-broken", ("data", "validate", "{shop}/items.jsonl"), 2, ("items.jsonl", "cannot be parsed as jsonl"),
            setup=_replace("items.jsonl", '{"item_id": "A", "title": "Lamp"}\n{"item_id": "B", "title": \n')),
    CliCase("items-parquet-broken", ("data", "validate", "{shop}/items.parquet"), 2,
            ("items.parquet", "cannot be parsed as parquet"), setup=_write_bytes("items.parquet", b"PAR1 not really parquet")),
    CliCase("items-csv-extra-field", VALIDATE_ITEMS, 2, ("items.csv", "line 3 has 4 fields", "header has 3"),
            setup=_replace("items.csv", "item_id,title,price\nA,Lamp,1\nB,Mug,2,extra\n")),
    CliCase("items-csv-unclosed-quote", VALIDATE_ITEMS, 2, ("items.csv", "line 3", "never closed"),
            setup=_replace("items.csv", 'item_id,title,price\nA,Lamp,1\nB,"Mug,2\nC,Cup,3\n')),
    CliCase("items-tsv-written-with-commas", ("data", "validate", "{shop}/items.tsv"), 2,
            ("items.tsv", "required column 'item_id' is missing"), setup=_copy_as("items.csv", "items.tsv")),
    CliCase("build-index-header-only-catalog", ("build-index", "--model", "{model}", "--items", "{shop}/items.csv"), 2,
            ("items.csv", "no items", "header and no rows"), setup=_replace("items.csv", "item_id,title\n")),
    # ---- rows under the default policy (error): the first one stops the run, named by row and column
    CliCase("items-duplicate-id", EVALUATE, 2, ("items.csv row 2, column item_id", "duplicate item_id 't1'"),
            setup=_edit("items.csv", "T2,Summit", "T1,Summit")),
    CliCase("items-empty-title", EVALUATE, 2, ("items.csv row 3, column title", "title is empty"),
            setup=_edit("items.csv", "S1,Down Sleeping Bag,", "S1,,")),
    CliCase("items-negative-price", EVALUATE, 2, ("items.csv row 1, column price", "negative price", "skip would set the value to null"),
            setup=_edit("items.csv", "120.00", "-120.00")),
    CliCase("items-bracket-id-is-text", EVALUATE, 2, ("duplicate item_id '[/x]'",),
            setup=_both(_edit("items.csv", "T1,", "[/x],"), _edit("items.csv", "T2,", "[/x],"))),
    CliCase("events-bad-timestamp", EVALUATE, 2, ("events.csv row 2, column timestamp", "'yesterday' is not an iso-8601"),
            setup=_edit("events.csv", "2026-01-01T09:05:00Z", "yesterday")),
    CliCase("events-unknown-kind", EVALUATE, 2, ("events.csv row 1, column event", "'like' is not one of"),
            setup=_edit("events.csv", "view", "like")),
    CliCase("events-unknown-item", EVALUATE, 2, ("events.csv row 1, column item_id", "item 'zz' is not in the catalog"),
            setup=_edit("events.csv", "u1,C1,", "u1,ZZ,")),
    CliCase("events-empty-user", EVALUATE, 2, ("events.csv row 17, column user_id", "user_id is empty"),
            setup=_edit("events.csv", "u4,M1,", ",M1,")),
    CliCase("bundles-unknown-item", VALIDATE_SHOP, 2, ("bundles.csv row 6, column item_id", "item 'p9' is not in the catalog"),
            setup=_edit("bundles.csv", "b2,P3,", "b2,P9,")),
    # ---- rows under skip: every one listed on screen and in the report, optional fields nulled
    CliCase("skip-nulls-a-bad-price", EVALUATE_SKIP, 0,
            ("items.csv: 1 values set to null (not a number)", "row 8, column price: 'free' is not a number -> set to null",
             "listed in", "skipped.csv"), setup=_edit("items.csv", "599.00", "free")),
    CliCase("skip-nulls-a-bad-in-stock", EVALUATE_SKIP, 0, ("'maybe' is not true/false -> set to null (in stock by default)",),
            setup=_edit("items.csv", "false", "maybe")),
    CliCase("skip-nulls-a-bad-quantity", EVALUATE_SKIP, 0, ("row 3, column quantity", "set to null (quantity 1 by default)"),
            setup=_edit("events.csv", "o1,2", "o1,two")),
    CliCase("skip-names-the-dropped-item-of-an-event", EVALUATE_SKIP, 0,
            ("items.csv: 1 rows dropped (empty title)", "events.csv: 2 rows dropped (event for unknown item)",
             "item 't1' was dropped above (items.csv row 1)", "listed in"),
            setup=_edit("items.csv", "T1,TrailPeak 2-Person Dome Tent,", "T1,,")),
    CliCase("skip-every-event-dropped", EVALUATE_SKIP, 2,
            ("events.csv: 17 rows dropped (unparseable timestamp)", "no events left", "all 17 rows were dropped", "listed in"),
            setup=_edit("events.csv", "2026-", "20x6-", -1)),
    CliCase("skip-every-item-dropped", EVALUATE_SKIP, 2,
            ("items.csv: 10 rows dropped (empty title)", "no valid items left", "all 10 rows were dropped", "listed in"),
            setup=_every_title_empty),
    CliCase("skip-report-not-csv", (*EVALUATE, "--on-bad-rows", "skip", "--skip-report", "{tmp}/skipped.txt"), 2,
            ("skip report", "must be a .csv file", "skipped.txt")),
    CliCase("skip-report-unwritable", (*EVALUATE, "--on-bad-rows", "skip", "--skip-report", "{shop}/items.csv/skipped.csv"), 2,
            ("--skip-report", "cannot write it"), setup=_edit("items.csv", "599.00", "free")),
    CliCase("on-bad-rows-unknown-policy", (*EVALUATE, "--on-bad-rows", "drop"), 2, ("--on-bad-rows must be error or skip", "'drop'")),
    # ---- kept, with a warning
    CliCase("events-future-timestamps-warn", VALIDATE_SHOP, 0,
            ("warning", "events.csv: 3 events have a timestamp in the future", "latest 2099-02-12"),
            setup=_edit("events.csv", "2026-02-1", "2099-02-1", -1)),
]
