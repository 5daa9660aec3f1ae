"""The `recs` command line. Known errors become one line on stderr and an exit code, never a
traceback (`recs.cli.common.handle_errors`, the one place that maps them). One module per group
of commands; importing this package registers them all on `app`."""

from __future__ import annotations

import importlib

from recs.cli.common import app, main

# Registered in the order `recs --help` lists them: the pipeline's.
for _module in ("data", "train", "batch", "query", "serving", "export", "evaluate"):
    importlib.import_module(f"recs.cli.{_module}")

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
