"""Bad-input cases: the event store and the commands that read it (`refresh`, `forget`, `serve
--events`, `train --resume-from --events`). Each fails with one line before any work."""

from __future__ import annotations

from tests.bad_inputs.case import CliCase, cli_case, make_folder, write_file

UNREACHABLE = "postgresql://shop:hunter2secret@127.0.0.1:9/recs"

CASES: list[CliCase] = [
    cli_case("refresh-store-is-a-folder", "refresh --model {model} --events {tmp}/store.sqlite", 4,
             ("cannot open the event store", "store.sqlite"), make_folder("store.sqlite")),
    cli_case("refresh-store-not-sqlite", "refresh --model {model} --events {tmp}/store.sqlite", 4,
             ("store.sqlite", "not a database"), write_file("store.sqlite", "user_id,item_id\nu1,i1\n" * 200)),
    cli_case("refresh-store-server-unreachable", f"refresh --model {{model}} --events {UNREACHABLE}", 4,
             ("event store", "127.0.0.1")),
    cli_case("refresh-model-not-an-artifact", "refresh --model {tmp}/plain --events {tmp}/s.sqlite", 4,
             ("plain",), make_folder("plain")),
    cli_case("forget-model-missing", "forget --model {tmp}/nothing --user U0001", 4, ("nothing",)),
    cli_case("forget-store-is-a-folder", "forget --model {model} --user U0001 --events {tmp}/s.sqlite", 4,
             ("cannot open the event store",), make_folder("s.sqlite")),
    cli_case("serve-store-is-a-folder", "serve --model {model} --events {tmp}/s.sqlite --port 1", 4,
             ("cannot open the event store",), make_folder("s.sqlite")),
    cli_case("serve-watch-interval-zero", "serve --model {model} --config {tmp}/c.toml", 2,
             ("watch_interval_s",), write_file("c.toml", "[serving.http]\nwatch = true\nwatch_interval_s = 0\n")),
]
