"""Loading and validation: every malformed input gets a one-line error naming file, row and column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recs.config import DataConfig
from recs.data import LoadReport, load_dataset, load_tables, read_table
from recs.data.load import load_catalog
from recs.data.schema import EVENTS_SCHEMA
from recs.errors import ConfigError, DataError


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


def test_header_only_items_file_is_an_error(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\n")
    assert "items.csv: no items (the file has a header and no rows)" in load_error(items)
    with pytest.raises(DataError, match="no items"):
        load_tables(items, None, collect_only=True)  # `recs data validate` too


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
    assert dataset.items["item_id"].to_list() == ["A", "C", "D"]
    assert dataset.items["price"].to_list() == [1.0, None, 3.0]
    assert dataset.events["item_id"].to_list() == ["A", "D"]
    assert dict(report.validation.dropped) == {
        ("items.csv", "empty title"): 1,
        ("events.csv", "event for unknown item"): 1,
        ("events.csv", "unparseable timestamp"): 1,
    }
    assert dict(report.validation.nulled) == {("items.csv", "negative price"): 1}
    assert "items.csv: 1 rows dropped (empty title)" in report.lines()
    assert "items.csv: 1 values set to null (negative price)" in report.lines()


@pytest.mark.parametrize(
    ("column", "value", "kind", "expected"),
    [
        ("price", "abc", "not a number", None),
        ("price", "NaN", "NaN or infinite", None),
        ("price", "-4", "negative price", None),
        ("in_stock", "maybe", "not a boolean", True),
    ],
)
def test_skip_sets_a_bad_optional_item_field_to_null_and_keeps_the_row(
    tmp_path: Path, column: str, value: str, kind: str, expected: object
) -> None:
    items = write(tmp_path, "items.csv", f"item_id,title,{column}\nA,Lamp,\nC,Tent,{value}\n")
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\nu1,A,2026-01-01\nu1,C,2026-01-02\n")
    dataset, report = load_tables(items, events, config=DataConfig(on_bad_rows="skip"))
    assert dataset.items["item_id"].to_list() == ["A", "C"]
    assert dataset.items[column][1] == expected  # null; in_stock then its default, true
    assert dataset.events.height == 2  # the item's events are kept with it
    assert not report.validation.dropped
    assert dict(report.validation.nulled) == {("items.csv", kind): 1}
    (problem,) = report.validation.problems
    assert (problem.row, problem.column, problem.kind) == (2, column, kind)
    assert problem.action.startswith("set to null")


def test_skip_sets_bad_event_quantity_and_rating_to_null(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\nA,Lamp\n")
    events = write(
        tmp_path, "events.csv",
        "user_id,item_id,timestamp,quantity,rating\nu1,A,2026-01-01,two,4\nu2,A,2026-01-02,3,great\n",
    )
    dataset, report = load_tables(items, events, config=DataConfig(on_bad_rows="skip"))
    assert dataset.events.sort("user_id")["quantity"].to_list() == [1.0, 3.0]  # quantity's default
    assert dataset.events.sort("user_id")["rating"].to_list() == [4.0, None]
    assert [(p.row, p.column, p.action) for p in report.validation.problems] == [
        (1, "quantity", "set to null (quantity 1 by default)"), (2, "rating", "set to null"),
    ]


def test_error_policy_still_stops_at_a_bad_optional_field(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title,price\nA,Lamp,cheap\n")
    message = load_error(items)
    assert "items.csv row 1, column price: 'cheap' is not a number" in message
    assert "skip would set the value to null" in message


def test_a_dropped_row_counts_once_under_its_required_reason(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title,price\nA,Lamp,1\nB,,abc\n")
    dataset, report = load_tables(items, None, config=DataConfig(on_bad_rows="skip"))
    assert dataset.items["item_id"].to_list() == ["A"]
    assert dict(report.validation.dropped) == {("items.csv", "empty title"): 1}
    assert not report.validation.nulled
    assert [p.action for p in report.validation.problems] == ["row dropped", "row dropped"]


def test_events_of_a_dropped_item_say_it_was_dropped(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\nA,Lamp\nB,\n")
    events = write(
        tmp_path, "events.csv",
        "user_id,item_id,timestamp\nu1,A,2026-01-01\nu1,B,2026-01-02\nu2,B,2026-01-03\nu2,Z,2026-01-03\n",
    )
    _, report = load_tables(items, events, config=DataConfig(on_bad_rows="skip"))
    messages = [str(p) for p in report.validation.problems if p.file == "events.csv"]
    assert messages == [
        "events.csv row 2, column item_id: item 'B' was dropped above (items.csv row 2)",
        "events.csv row 3, column item_id: item 'B' was dropped above (items.csv row 2)",
        "events.csv row 4, column item_id: item 'Z' is not in the catalog",
    ]
    assert report.validation.dropped[("events.csv", "event for unknown item")] == 3


def test_every_item_dropped_is_an_error_that_says_why(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\nA,\nB,\n")
    with pytest.raises(DataError, match=r"items.csv: no valid items left: all 2 rows were dropped \(2 empty title\)"):
        load_tables(items, None, config=DataConfig(on_bad_rows="skip"))


def test_header_only_events_are_an_error_when_events_are_required(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", "item_id,title\nA,Lamp\n")
    write(tmp_path, "events.csv", "user_id,item_id,timestamp\n")
    with pytest.raises(DataError, match=r"events.csv: no events \(the file has a header and no rows\)"):
        load_dataset(tmp_path)
    # train-bundler may learn from curated bundles alone: the empty log is a warning there
    dataset, report = load_dataset(tmp_path, require_events=False)
    assert dataset.events.height == 0
    assert report.warnings == ["events.csv: no events (the file has a header and no rows)"]
    _, report = load_tables(tmp_path / "items.csv", tmp_path / "events.csv", collect_only=True)
    assert [str(p) for p in report.validation.problems] == ["events.csv: no events (the file has a header and no rows)"]


def test_events_all_dropped_or_cleaned_away_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, "items.csv", "item_id,title\nA,Lamp\n")
    write(tmp_path, "events.csv", "user_id,item_id,timestamp,quantity\nu1,Z,2026-01-01,1\nu1,A,2026-01-02,-1\n")
    report = LoadReport()
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, DataConfig(on_bad_rows="skip"), report=report)
    assert "events.csv: no events left: all 2 rows were dropped (1 event for unknown item, 1 non-positive" in str(info.value)
    # the caller's report was filled before the error: the CLI still lists the dropped rows
    assert [p.row for p in report.validation.problems] == [1]


def test_future_timestamps_are_kept_with_a_warning(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title\nA,Lamp\n")
    events = write(
        tmp_path, "events.csv",
        "user_id,item_id,timestamp\nu1,A,2026-01-01\nu1,A,2099-03-01T10:00:00Z\nu2,A,2098-01-01\n",
    )
    for collect_only in (False, True):
        dataset, report = load_tables(items, events, collect_only=collect_only)
        assert dataset.events.height == 3
        assert report.warnings == [
            "events.csv: 2 events have a timestamp in the future (latest 2099-03-01 10:00:00+00:00); they are kept"
        ]
        assert report.validation.ok


def test_header_only_bundles_are_a_warning(shop_dir: Path) -> None:
    (shop_dir / "bundles.csv").write_text("bundle_id,item_id\n", encoding="utf-8")
    _, report = load_dataset(shop_dir)
    assert report.warnings == ["bundles.csv: no bundles (the file has a header and no rows)"]


def test_skip_report_lists_every_problem_as_csv(tmp_path: Path) -> None:
    items = write(tmp_path, "items.csv", "item_id,title,price\nA,Lamp,x\nB,,1\n")
    _, report = load_tables(items, None, config=DataConfig(on_bad_rows="skip"))
    path = report.validation.write_csv(tmp_path / "out" / "skipped.csv")
    frame = pl.read_csv(path)
    assert frame.columns == ["file", "row", "column", "kind", "message", "action"]
    assert frame.rows() == [
        ("items.csv", 1, "price", "not a number", "'x' is not a number", "set to null"),
        ("items.csv", 2, "title", "empty title", "title is empty", "row dropped"),
    ]


def test_skip_report_must_be_csv() -> None:
    with pytest.raises(ConfigError, match=r"must be a \.csv file"):
        DataConfig(skip_report=Path("report.txt"))
    assert DataConfig().skip_report == Path("recs-skipped-rows.csv")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("item_id,title\nA,x\nB,y,3\n", "items.csv: cannot be parsed as csv: line 3 has 3 fields, the header has 2"),
        ("item_id,title\nA,x\n\"B,y\nC,z\n", "items.csv: cannot be parsed as csv: line 3: a quote opened there is never closed"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(write(tmp_path, "items.csv", text))


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("item_id,title\n", "items.csv: no items (the file has a header and no rows)"),
        ("item_id,price\nA,1\n", "items.csv, column title: required column 'title' is missing"),
        ("item_id,title,price\nA,Lamp,x\n", "items.csv row 1, column price: 'x' is not a number"),
    ],
)
def test_a_catalog_file_alone_is_checked_like_a_shop(tmp_path: Path, text: str, expected: str) -> None:
    """`recs build-index --items FILE`: every problem is an error, a header-only file included."""
    with pytest.raises(DataError) as info:
        load_catalog(write(tmp_path, "items.csv", text))
    assert expected in str(info.value)


def test_the_python_api_reports_what_skip_dropped(shop_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Engine.fit's frames go through `frames_dataset`: the same counts (logged) and report file as the CLI."""
    from recs.config import RecsConfig
    from recs.data.io import read_table
    from recs.serving.fit import frames_dataset

    items = read_table(shop_dir / "items.csv").with_columns(pl.when(pl.col("item_id") == "P1").then(pl.lit("free"))
                                                             .otherwise(pl.col("price")).alias("price"))
    report = tmp_path / "skipped.csv"
    config = RecsConfig.parse_dict({"data": {"on_bad_rows": "skip", "skip_report": str(report)}}, source="test")
    with caplog.at_level("WARNING"):
        dataset = frames_dataset(items, read_table(shop_dir / "events.csv"), None, config)
    assert dataset.items.height == 10  # the bad price became null, the item stayed
    assert "1 values set to null (not a number)" in caplog.text
    assert f"listed in {report}" in caplog.text and "set to null" in report.read_text()
