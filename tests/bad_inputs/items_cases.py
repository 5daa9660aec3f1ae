"""Bad-input cases: `recs items upsert` (an items file, removals, an event store). Each fails with
one line naming what is wrong (file, row, column; the id; the store) before the model is written."""

from __future__ import annotations

from tests.bad_inputs.case import CliCase, cli_case, make_folder, write_file

UPSERT = "items upsert --model {model}"

CASES: list[CliCase] = [
    cli_case("items-upsert-bad-price", f"{UPSERT} {{tmp}}/new.csv", 2, ("new.csv", "row 2", "price"),
             write_file("new.csv", "item_id,title,price\nN1,Kettle,20\nN2,Teapot,cheap\n")),
    cli_case("items-upsert-no-title-column", f"{UPSERT} {{tmp}}/new.csv", 2, ("new.csv", "title"),
             write_file("new.csv", "item_id,price\nN1,20\n")),
    cli_case("items-upsert-empty-title", f"{UPSERT} {{tmp}}/new.csv", 2, ("row 1", "title"),
             write_file("new.csv", "item_id,title\nN1,\n")),
    cli_case("items-upsert-duplicate-id", f"{UPSERT} {{tmp}}/new.csv", 2, ("row 2", "duplicate"),
             write_file("new.csv", "item_id,title\nN1,Kettle\nN1,Kettle again\n")),
    cli_case("items-upsert-header-only", f"{UPSERT} {{tmp}}/new.csv", 2, ("new.csv",), write_file("new.csv", "item_id,title\n")),
    cli_case("items-upsert-file-missing", f"{UPSERT} {{tmp}}/absent.csv", 2, ("absent.csv",)),
    cli_case("items-upsert-remove-unknown", f"{UPSERT} --remove NOPE-1,NOPE-2", 3, ("nope-1",)),
    cli_case("items-upsert-nothing-to-do", UPSERT, 2, ("--remove",)),
    cli_case("items-upsert-model-missing", "items upsert --model {tmp}/nothing --remove X", 4, ("nothing",)),
    cli_case("items-upsert-model-not-an-artifact", "items upsert --model {tmp}/plain --remove X", 4, ("plain",), make_folder("plain")),
    cli_case("items-upsert-store-is-a-folder", f"{UPSERT} --events {{tmp}}/s.sqlite", 4, ("cannot open the event store",),
             make_folder("s.sqlite")),
]
