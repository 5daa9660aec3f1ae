"""Reading raw tables (CSV, TSV, Parquet, JSONL) with polars, every problem named by file."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from recs.errors import DataError
from recs.io import atomic_write_file

SUPPORTED_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson")


def _format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".csv.gz", ".tsv.gz", ".jsonl.gz"):
        if name.endswith(suffix):
            raise DataError(f"{path}: compressed input is not supported; decompress it first")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return suffix


def check_utf8(path: Path) -> None:
    """Raise DataError naming the line and column (byte offset) of the first non-UTF-8 byte."""
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path.name} line {line_no}, byte {err.start + 1}: not valid UTF-8 "
                    f"(byte 0x{line[err.start]:02x}); re-encode the file as UTF-8"
                ) from None


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a table with every column as text for CSV/TSV (so validation sees the raw values) and
    native types for Parquet/JSONL. Raises DataError for a missing, empty or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = _format_of(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path.name}: file is empty")
    if suffix in (".csv", ".tsv", ".jsonl", ".ndjson"):
        check_utf8(path)
    try:
        if suffix in (".csv", ".tsv"):
            frame = pl.read_csv(
                path,
                separator="\t" if suffix == ".tsv" else ",",
                infer_schema=False,
            )
        elif suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_ndjson(path, infer_schema_length=None)
    except pl.exceptions.NoDataError:
        raise DataError(f"{path.name}: file is empty") from None
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = _bad_csv_line(path, "\t" if suffix == ".tsv" else ",") if suffix in (".csv", ".tsv") else None
        raise DataError(f"{path.name}: cannot be parsed as {suffix[1:]}: {where or first_line}") from None
    if frame.width == 0:
        raise DataError(f"{path.name}: file is empty (no header)")
    frame = frame.rename({c: c.strip() for c in frame.columns})
    return frame


def _bad_csv_line(path: Path, separator: str) -> str | None:
    """The first line polars' error is about (its messages name no line): a row with more fields
    than the header, or an unterminated quote."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=separator, strict=True)
        start = 1  # the line the current record starts on (a quoted field may span lines)
        try:
            header = next(reader, [])
            start = reader.line_num + 1
            for fields in reader:
                if len(fields) > len(header):
                    return f"line {start} has {len(fields)} fields, the header has {len(header)}"
                start = reader.line_num + 1
        except csv.Error as err:
            # Other csv errors (a field over csv's own size limit) say nothing of the file: keep polars'.
            return f"line {start}: a quote opened there is never closed" if "end of data" in str(err) else None
    return None


def find_table(folder: Path, stem: str, required: bool = True) -> Path | None:
    """`items` -> folder/items.{csv,tsv,parquet,jsonl}; exactly one may exist."""
    found = [folder / f"{stem}{suffix}" for suffix in SUPPORTED_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several {stem} files ({', '.join(p.name for p in found)}); keep one")
    if not found:
        if required:
            raise DataError(
                f"{folder}: no {stem} file (expected {stem}.csv, .tsv, .parquet or .jsonl)"
            )
        return None
    return found[0]


def write_table_atomic(frame: pl.DataFrame, path: Path) -> Path:
    """Write CSV/Parquet/JSONL by extension through a temp file and an atomic rename."""
    path = Path(path)
    suffix = _format_of(path)

    def write(tmp: Path) -> None:
        if suffix == ".csv":
            frame.write_csv(tmp)
        elif suffix == ".tsv":
            frame.write_csv(tmp, separator="\t")
        elif suffix == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_ndjson(tmp)

    return atomic_write_file(path, write)
