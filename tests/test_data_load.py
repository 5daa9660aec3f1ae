"""Loading and validation: every malformed input gets a one-line error naming file, row and column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recs.config import DataConfig
from recs.data import load_dataset, load_tables, read_table
from recs.data.schema import EVENTS_SCHEMA
from recs.errors import DataError


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(items: Path, events: Path | None = None) -> str:
    with pytest.raises(DataError) as info:
        load_tables(items, events)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_loads_demo_fixture_with_canonical_dtypes(shop_dir: Path) -> None:
    dataset, report = load_dataset(shop_dir)
    assert report.validation.ok
    assert dataset.items.height == 10
    assert dict(dataset.events.schema) == EVENTS_SCHEMA
    assert dataset.bundles is not None and dataset.bundles["bundle_id"].n_unique() == 2
    purchases = dataset.purchases()
    assert purchases["basket_id"].null_count() == 0
    assert dataset.events.filter(pl.col("event") != "purchase")["basket_id"].null_count() == 3


@pytest.mark.parametrize("suffix", [".tsv", ".parquet", ".jsonl"])
def test_other_formats_load_identically(shop_dir: Path, tmp_path: Path, suffix: str) -> None:
    reference, _ = load_dataset(shop_dir)
    other = tmp_path / f"other{suffix.replace('.', '_')}"
    other.mkdir()
    for stem in ("items", "events"):
        frame = read_table(shop_dir / f"{stem}.csv")
        target = other / f"{stem}{suffix}"
        if suffix == ".tsv":
            frame.write_csv(target, separator="\t")
        elif suffix == ".parquet":
            frame.write_parquet(target)
        else:
            frame.write_ndjson(target)
    loaded, _ = load_dataset(other)
    assert loaded.events.equals(reference.events)
    assert loaded.items.select("item_id", "title", "price").equals(reference.items.select("item_id", "title", "price"))


def test_missing_column_named(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,name\nA,x\n")
    message = load_error(items)
    assert "items.csv" in message and "column title" in message and "missing" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("A,,1.0", "row 2, column title: title is empty"),
        ("A,Tent,abc", "row 2, column price: 'abc' is not a number"),
        ("A,Tent,-3", "row 2, column price: negative price"),
        ("A,Tent,NaN", "row 2, column price: NaN"),
        ("X,Tent,1.0", "row 2, column item_id: duplicate item_id 'X'"),
    ],
)
def test_bad_item_rows_named(tmp_path: Path, row: str, expected: str) -> None:
    items = write(tmp_path, "items.csv", f"item_id,title,price\nX,Lamp,2.0\n{row}\n")
    assert expected in load_error(items)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("u1,A,yesterday,purchase", "events.csv row 2, column timestamp: 'yesterday' is not an ISO-8601"),
        ("u1,ZZ,2026-01-01,purchase", "events.csv row 2, column item_id: item 'ZZ' is not in the catalog"),
        ("u1,A,2026-01-01,like", "events.csv row 2, column event: 'like' is not one of"),
        (",A,2026-01-01,view", "events.csv row 2, column user_id: user_id is empty"),
    ],
)
def test_bad_event_rows_named(tmp_path: Path, row: str, expected: str) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\nA,Lamp\n")
    events = write(tmp_path, "events.csv", f"user_id,item_id,timestamp,event\nu1,A,2026-01-01,view\n{row}\n")
    assert expected in load_error(items, events)


def test_non_utf8_named(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title\nA,Caf\xe9 beans\n")
    message = load_error(path)
    assert "items.csv line 2" in message and "UTF-8" in message


def test_empty_file_named(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "")
    assert "items.csv: file is empty" in load_error(items)


def test_header_only_file_has_no_valid_items(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\n")
    assert "no valid items" in load_error(items)


def test_unsupported_suffix(tmp_path: Path) -> None:
    items = write(tmp_path, "items.xlsx", "x")
    assert "unsupported file type .xlsx" in load_error(items)


def test_error_message_counts_further_problems(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title,price\nA,,1\nB,,2\nC,x,-1\n")
    assert "and 2 more problems" in load_error(items)


def test_skip_policy_drops_exactly_the_bad_rows_and_says_why(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title,price\nA,Lamp,1\nB,,2\nC,Tent,-1\nD,Mug,3\n")
    events = write(
        tmp_path,
        "events.csv",
        "user_id,item_id,timestamp\nu1,A,2026-01-01\nu1,B,2026-01-02\nu1,D,never\nu1,D,2026-01-03\n",
    )
    dataset, report = load_tables(items, events, config=DataConfig(on_bad_rows="skip"))
    assert dataset.items["item_id"].to_list() == ["A", "D"]
    assert dataset.events["item_id"].to_list() == ["A", "D"]
    assert dict(report.validation.dropped) == {
        ("items.csv", "empty title"): 1,
        ("items.csv", "negative price"): 1,
        ("events.csv", "event for unknown item"): 1,
        ("events.csv", "unparseable timestamp"): 1,
    }
    assert "items.csv: 1 rows dropped (empty title)" in report.lines()


def test_timestamp_formats(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\nA,Lamp\n")
    events = write(
        tmp_path,
        "events.csv",
        "user_id,item_id,timestamp\n"
        "u1,A,2026-03-01T10:15:00Z\nu2,A,2026-03-01 10:15:00\nu3,A,2026-03-01T12:15:00+02:00\n"
        "u4,A,1772360100\nu5,A,1772360100.0\n",
    )
    dataset, _ = load_tables(items, events)
    assert dataset.events["timestamp"].n_unique() == 1


def test_input_files_never_modified(shop_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in shop_dir.iterdir()}
    load_dataset(shop_dir)
    assert before == {p.name: p.read_bytes() for p in shop_dir.iterdir()}
