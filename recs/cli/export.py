"""`recs export` (ONNX) and `recs export-vectors` (search backends)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from recs.cli.common import app, check_output, console, fmt_value, handle_errors


@app.command("export")
@handle_errors
def export_command(
    model: Annotated[Path, typer.Option("--model", help="Trained artifact folder (towers, and the ranking stage if trained).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the ONNX serving artifact (replaced atomically).")],
    int8: Annotated[bool, typer.Option("--int8", help="Also write dynamically quantised int8 graphs.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the parity checks against torch.")] = False,
    no_fuse: Annotated[bool, typer.Option("--no-fuse", help="Skip onnxruntime's BERT fusions (attention, LayerNorm, GELU): basic-optimised graphs only.")] = False,
) -> None:
    """Export towers, cross-encoder and rankers to ONNX: a folder served without torch."""
    from recs.export import export_artifact

    check_output(out, "--out", "artifact")
    result = export_artifact(model, out, int8=int8, check=not no_check, fuse=not no_fuse)
    table = Table(title=f"ONNX export {out}")
    for column in ("graph", "fp32 MB", "int8 MB", "parity"):
        table.add_column(column, justify="left" if column in ("graph", "parity") else "right")
    for name, sizes in result.sizes().items():
        table.add_row(name, f"{sizes['fp32'] / 1e6:.1f}", f"{sizes['int8'] / 1e6:.1f}" if "int8" in sizes else "", _parity_text(result.parity.get(name)))
    console.print(table)
    for note in result.skipped:
        console.print(f"not exported: {note}", highlight=False)
    console.print(f"saved {out} (serve it with `recs query --model {out}`; torch is not needed)", highlight=False)


def _parity_text(parity: dict[str, Any] | None) -> str:
    if not parity:
        return ""
    if "max_abs_diff" in parity and "rows" in parity:
        return f"max |diff| {parity['max_abs_diff']:.1e} over {parity['rows']} rows"
    parts = []
    for precision, p in parity.items():
        if not isinstance(p, dict):  # a flat report (e.g. the set scorer's): key = value
            parts.append(f"{precision} {p:.1e}" if isinstance(p, float) else f"{precision} {p}")
            continue
        if "min_cosine" in p:
            parts.append(f"{precision} cos >= {p['min_cosine']:.4f}")
        elif "max_abs_diff" in p:
            parts.append(f"{precision} max |diff| {p['max_abs_diff']:.1e}")
    return "; ".join(parts)


@app.command("export-vectors")
@handle_errors
def export_vectors_command(
    model: Annotated[Path, typer.Option("--model", help="Artifact folder (trained or exported).")],
    to: Annotated[str, typer.Option("--to", help="parquet | npy | pgvector | opensearch | elasticsearch")],
    out: Annotated[Path | None, typer.Option("--out", help="File (parquet) or folder (npy, opensearch, elasticsearch); files already there are replaced atomically, other files in the folder are left alone.")] = None,
    dsn: Annotated[str | None, typer.Option("--dsn", help="pgvector: libpq connection string or postgresql:// URI.")] = None,
    table: Annotated[str, typer.Option("--table", help="pgvector: table name (NAME or SCHEMA.NAME).")] = "recs_items",
    index: Annotated[str, typer.Option("--index", help="opensearch/elasticsearch: index name in the bulk file.")] = "recs-items",
    fields: Annotated[str | None, typer.Option("--fields", help="Item fields to carry, F,F,... (default: all).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="pgvector: drop the table first if it exists.")] = False,
) -> None:
    """Write item vectors + fields for a search backend (Parquet/NPY, pgvector, OpenSearch/Elasticsearch)."""
    from recs.export.backends import BACKENDS, export_search_index

    if out is not None and to in BACKENDS and to != "pgvector":
        check_output(out, "--out", "file" if to == "parquet" else "folder")
    chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    report = export_search_index(model, to, out=out, dsn=dsn, table=table, index=index, fields=chosen, replace=replace)
    where = report.get("table") or report.get("files")
    console.print(f"exported {report['items']} item vectors (dim {report['dim']}) to {to}: {fmt_value(where)}", highlight=False)
    if "query" in report:
        console.print("top-k query (see README):\n" + report["query"], highlight=False)

