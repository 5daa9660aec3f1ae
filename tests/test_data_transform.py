"""Cleaning, baskets, splits (no leakage), text rendering and profiles."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recs.config import CleaningConfig
from recs.data import (
    assign_baskets,
    basket_table,
    clean_events,
    leave_last_out,
    load_dataset,
    render_item,
    render_user,
    time_split,
    user_histories,
    user_profile,
)
from recs.data.schema import Dataset
from recs.errors import UnknownUserError


@pytest.fixture()
def dataset(shop_dir: Path) -> Dataset:
    return load_dataset(shop_dir)[0]


def events_frame(rows: list[tuple[str, str, str, str, str | None, float]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        rows, schema=["user_id", "item_id", "timestamp", "event", "order_id", "quantity"], orient="row"
    ).with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC", time_unit="us"),
        pl.col("quantity").cast(pl.Float64),
        pl.lit(None, dtype=pl.Float64).alias("rating"),
    )
    return frame


def test_cleaning_drops_duplicates_cancellations_and_bots() -> None:
    rows = [
        ("u1", "A", "2026-01-01T10:00:00", "purchase", "o1", 1.0),
        ("u1", "A", "2026-01-01T10:00:00", "purchase", "o1", 1.0),
        ("u1", "B", "2026-01-01T10:00:00", "purchase", "C9", 1.0),
        ("u1", "B", "2026-01-02T10:00:00", "purchase", "o2", -1.0),
    ] + [("bot", "A", f"2026-01-03T10:{m:02d}:00", "view", None, 1.0) for m in range(30)]
    cleaned, report = clean_events(
        events_frame(rows), CleaningConfig(cancellation_prefix="C", bot_max_events_per_day=20)
    )
    assert cleaned.height == 1
    assert report.bot_users == ["bot"]
    assert report.dropped["exact duplicate event"] == 1
    assert report.dropped["non-positive quantity (return or cancellation)"] == 1
    assert any("bot-like" in line for line in report.lines())


def test_baskets_from_order_id_and_session_window() -> None:
    rows = [
        ("u1", "A", "2026-01-01T10:00:00", "purchase", "o1", 1.0),
        ("u1", "B", "2026-01-01T10:00:00", "purchase", "o1", 1.0),
        ("u2", "A", "2026-01-01T10:00:00", "purchase", None, 1.0),
        ("u2", "B", "2026-01-01T10:20:00", "purchase", None, 1.0),
        ("u2", "C", "2026-01-01T12:00:00", "purchase", None, 1.0),
        ("u2", "C", "2026-01-01T12:01:00", "view", None, 1.0),
    ]
    events = assign_baskets(events_frame(rows))
    baskets = basket_table(events)
    assert sorted(len(items) for items in baskets["items"].to_list()) == [1, 2, 2]
    assert events.filter(pl.col("event") == "view")["basket_id"].null_count() == 1


def test_leave_last_out_never_leaks(dataset: Dataset) -> None:
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    # u4 has a single basket: not a test user.
    assert set(split.test["user_id"].unique()) == {"u1", "u2", "u3"}
    assert set(split.valid["user_id"].unique()) == {"u1", "u2", "u3"}
    for user, rows in split.test.group_by("user_id"):
        cut = rows["time"].min()
        fit = split.fit_events.filter(pl.col("user_id") == user[0])
        assert (fit["timestamp"] < cut).all()
        assert not fit["basket_id"].is_in(rows["basket_id"].implode()).any()
    for user, rows in split.valid.group_by("user_id"):
        tune = split.tune_events.filter(pl.col("user_id") == user[0])
        assert (tune["timestamp"] < rows["time"].min()).all()
    assert set(split.test.filter(pl.col("user_id") == "u3")["item_id"]) == {"C1", "P2"}
    # The test basket of every user is absent from the tuning data too.
    assert not split.tune_events["basket_id"].is_in(split.test["basket_id"].implode()).any()


def test_time_split_never_leaks_and_marks_cold_items(dataset: Dataset) -> None:
    cutoff = datetime(2026, 2, 1, tzinfo=UTC)
    split = time_split(dataset.events, cutoff, dataset.items["item_id"])
    assert (split.fit_events["timestamp"] < cutoff).all()
    assert (split.test["time"] >= cutoff).all()
    assert "L1" not in set(split.fit_events["item_id"])
    assert "L1" in split.cold_items and "T2" not in split.cold_items


def test_render_item_and_user() -> None:
    row = {"item_id": "A", "title": "Tent", "category": "Outdoors > Tents", "brand": None, "price": 120.0,
           "description": "Waterproof.", "color": "green", "image_url": "http://x"}
    text = render_item(row)
    assert text == "Tent | Outdoors > Tents | price 120.00 | color: green. Waterproof."
    history = [("view", "Tent"), ("purchase", "Lantern")]
    assert render_user(history) == "purchase: Lantern ; view: Tent"
    assert render_user(history, max_chars=20) == "purchase: Lantern"
    assert render_user([], cold_start_text="camping gear") == "camping gear"
    words = render_user(history, count_tokens=lambda s: len(s.split()), max_tokens=2)
    assert words == "purchase: Lantern"
    # Each item once, at its most recent event: repeats do not fill the user tower's tokens.
    repeats = [("purchase", "Milk"), ("view", "Tent"), ("purchase", "Milk"), ("cart", "Milk")]
    assert render_user(repeats) == "cart: Milk ; view: Tent"


def test_user_histories_are_chronological(dataset: Dataset) -> None:
    histories = user_histories(dataset.events, dataset.items)
    assert histories["u2"][0] == ("view", "TrailPeak 2-Person Dome Tent")
    assert histories["u2"][-1] == ("purchase", "LED Camping Lantern")


def test_profile(dataset: Dataset) -> None:
    profile = user_profile(dataset, "u1")
    assert profile["n_orders"] == 4
    assert profile["top_categories"][0] == "Grocery > Coffee > Beans"
    assert profile["price_median"] == pytest.approx(15.0)
    with pytest.raises(UnknownUserError):
        user_profile(dataset, "nobody")


def test_history_is_cut_at_the_start_of_the_target_session() -> None:
    rows = [
        ("u1", "A", "2026-01-01T10:00:00", "purchase", "o1", 1.0),
        ("u1", "B", "2026-01-05T09:00:00", "view", None, 1.0),
        ("u1", "B", "2026-01-05T09:10:00", "cart", None, 1.0),
        ("u1", "B", "2026-01-05T09:20:00", "purchase", "o2", 1.0),
    ]
    events = assign_baskets(events_frame(rows))
    split = leave_last_out(events)
    assert split.fit_events["event"].to_list() == ["purchase"]  # the view and cart of B are not history
    uncut = leave_last_out(events, session_gap=None)
    assert uncut.fit_events.height == 3


def test_last_baskets_of_size_hold_out_each_users_last_large_basket() -> None:
    from recs.data.splits import last_baskets_of_size

    rows = [
        ("u1", "A", "2026-01-01T10:00:00", "purchase", "o1", 1.0),
        ("u1", "B", "2026-01-03T10:00:00", "purchase", "o2", 1.0),
        ("u1", "C", "2026-01-03T10:00:00", "purchase", "o2", 1.0),
        ("u1", "D", "2026-01-03T10:00:00", "purchase", "o2", 1.0),
        ("u1", "E", "2026-01-05T09:00:00", "view", None, 1.0),
        ("u1", "E", "2026-01-05T10:00:00", "purchase", "o3", 1.0),  # last basket: one item
        ("u2", "B", "2026-01-02T10:00:00", "purchase", "o4", 1.0),  # a large first basket only
        ("u2", "C", "2026-01-02T10:00:00", "purchase", "o4", 1.0),
        ("u2", "D", "2026-01-02T10:00:00", "purchase", "o4", 1.0),
        ("u3", "A", "2026-01-01T10:00:00", "purchase", "o5", 1.0),
        ("u3", "B", "2026-01-04T10:00:00", "purchase", "o6", 1.0),
        ("u3", "C", "2026-01-04T10:00:00", "purchase", "o6", 1.0),
        ("u3", "X", "2026-01-04T10:00:00", "purchase", "o6", 1.0),  # not in the catalog below
    ]
    events = assign_baskets(events_frame(rows))
    targets, kept = last_baskets_of_size(events, 3, pl.Series(["A", "B", "C", "D", "E"]))
    assert sorted(set(targets["user_id"])) == ["u1"]
    assert sorted(targets["item_id"]) == ["B", "C", "D"]
    # u1's history ends before that basket: the later view and one-item basket are gone too
    assert kept.filter(pl.col("user_id") == "u1")["item_id"].to_list() == ["A"]
    assert kept.filter(pl.col("user_id") != "u1").height == 7  # other users whole
    without_catalog, _ = last_baskets_of_size(events, 3)
    assert sorted(set(without_catalog["user_id"])) == ["u1", "u3"]
    sampled, _ = last_baskets_of_size(events, 3, max_users=1, seed=0)
    assert sampled["user_id"].n_unique() == 1
