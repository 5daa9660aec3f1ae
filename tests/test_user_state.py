"""Per-user serving state: built once from the log (same state as the event frame gives), and
updated per event by `Retriever.add_events` so that the next request reflects it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recs.data.schema import epoch_seconds
from recs.retrieval.pairs import state_from_events
from recs.retrieval.retriever import Retriever
from recs.serving.engine import Engine


def test_context_matches_the_event_frame(trained_artifact: Path) -> None:
    r = Retriever.load(trained_artifact)
    by_user = {str(k[0]): g for k, g in r.events.sort("timestamp").group_by("user_id", maintain_order=True)}
    for user in sorted(by_user)[:40]:
        events = by_user[user]
        context = r.context(user_id=user)
        assert context.state == state_from_events(events, r.catalog, r.config.max_history_events, r.config.user_text_max_chars)
        buys = events.filter(pl.col("event") == "purchase")
        assert context.history.rows.tolist() == [r.catalog.row_of[i] for i in buys["item_id"].to_list()]
        assert np.array_equal(context.history.times, epoch_seconds(buys["timestamp"]))
        assert [(row, kind) for row, kind, _ in context.interactions] == list(
            zip([r.catalog.row_of[i] for i in events["item_id"].to_list()], events["event"].to_list(), strict=True)
        )


def test_a_new_purchase_changes_the_next_answer(trained_artifact: Path) -> None:
    engine = Engine.load(trained_artifact)
    r = engine.retriever
    user = sorted(r.users.user_ids())[0]
    before = engine.recommend(user_id=user, k=10)
    context = r.context(user_id=user)
    bought = set(context.history.rows.tolist())
    new_item = next(i for i in r.catalog.item_ids if r.catalog.row_of[i] not in bought)
    vector_before = r.user_vectors([context.state])[0]

    assert r.add_events(user, [(new_item, "purchase", r.now + 3600.0), ("NOT-AN-ITEM", "purchase", r.now)]) == 1
    after_context = r.context(user_id=user)
    assert after_context.history.rows[-1] == r.catalog.row_of[new_item]
    assert after_context.state.history_rows[-1] == r.catalog.row_of[new_item]
    assert not np.allclose(r.user_vectors([after_context.state])[0], vector_before)
    after = engine.recommend(user_id=user, k=10)
    assert [i.item_id for i in after] != [i.item_id for i in before]
    # Buy-again features see the purchase; exclude_bought leaves it out.
    features = {i.item_id: i.features for i in engine.recommend(user_id=user, k=50)}
    if new_item in features:
        assert features[new_item]["times_bought"] == 1.0
    assert new_item not in [i.item_id for i in engine.recommend(user_id=user, k=50, exclude_bought=True)]


def test_events_make_an_unknown_user_known_and_merge_in_time_order(trained_artifact: Path) -> None:
    r = Retriever.load(trained_artifact)
    assert not r.known_user("newcomer")
    first, second = r.catalog.item_ids[:2]
    r.add_events("newcomer", [(first, "purchase", 2000.0)])
    r.add_events("newcomer", [(second, "view", 1000.0)])  # older: goes first
    context = r.context(user_id="newcomer")
    assert context.known and r.known_user("newcomer")
    assert [row for row, _, _ in context.interactions] == [r.catalog.row_of[second], r.catalog.row_of[first]]
    assert context.history.rows.tolist() == [r.catalog.row_of[first]]
