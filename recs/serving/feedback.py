"""The feedback loop between an event store and the engines a service serves.

`StoreFollower.attach` brings a freshly loaded engine up to the store (the events, item changes
and forget requests after the ones its artifact folded in: `Retriever.store_marks`);
`StoreFollower.sync` applies what arrived since, and runs before every request, so a user's next
request reflects what they just did even when another worker (or another service process on the
same PostgreSQL store) took the event. Everything reaches an engine through the store: a worker
that appends an event reads it back like any other, so nothing is applied twice.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recs.data.schema import epoch_seconds
from recs.errors import DataError
from recs.serving.engine import Engine
from recs.serving.eventstore import EventStore, NewEvent, check_event

__all__ = ["Recorded", "StoreFollower", "record_events"]

log = logging.getLogger("recs.serving")

Heads = tuple[int, int, int]  # the store's last (event, item change, forget) seq an engine holds

# Item changes reach an engine through this (`create_app` passes recs.serving.items.apply_recorded).
ItemApplier = Callable[[Engine, Sequence[tuple[str, dict[str, Any] | None]]], None]


class StoreFollower:
    def __init__(self, store: EventStore, apply_items: ItemApplier | None = None) -> None:
        self.store = store
        self.apply_items = apply_items
        self._seen: weakref.WeakKeyDictionary[Engine, Heads] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # one sync at a time: each change is applied once per engine

    def attach(self, engine: Engine) -> None:
        """Replay onto `engine` what the store holds after its artifact's marks."""
        marks = engine.retriever.store_marks
        with self._lock:
            self._seen[engine] = (int(marks.get("events", 0)), int(marks.get("items", 0)), int(marks.get("forgets", 0)))
            self._apply(engine, self.store.heads())

    def sync(self, engine: Engine) -> None:
        heads = self.store.heads()
        seen = self._seen.get(engine)
        if seen is not None and all(h <= s for h, s in zip(heads, seen, strict=True)):
            return
        with self._lock:
            if engine not in self._seen:
                self._seen[engine] = (0, 0, 0)
            self._apply(engine, heads)

    def _apply(self, engine: Engine, heads: Heads) -> None:
        seen_events, seen_items, seen_forgets = self._seen[engine]
        retriever = engine.retriever
        if heads[1] > seen_items:
            changes = self.store.item_changes(seen_items)
            if changes and self.apply_items is not None:
                self.apply_items(engine, [(item, fields) for _, item, fields in changes])
            elif changes:
                log.warning("%d item changes in the event store are not applied: this service cannot change items", len(changes))
            seen_items = max([seen_items, *(seq for seq, _, _ in changes)])
        if heads[0] > seen_events:
            new = self.store.read(seen_events)
            if new.height:
                times = epoch_seconds(new["timestamp"])
                users: dict[str, list[tuple[str, str, float]]] = {}
                for (user, item, kind), when in zip(new.select("user_id", "item_id", "event").iter_rows(), times, strict=True):
                    users.setdefault(user, []).append((item, kind, float(when)))
                for user, events in users.items():
                    retriever.add_events(user, events)
                seen_events = max(seen_events, int(new["seq"].max()))  # type: ignore[arg-type]
        if heads[2] > seen_forgets:
            forgets = self.store.forgets(seen_forgets)
            for _, user in forgets:
                retriever.forget_user(user)
            seen_forgets = max([seen_forgets, *(seq for seq, _ in forgets)])
        self._seen[engine] = (seen_events, seen_items, seen_forgets)


@dataclass(frozen=True)
class Recorded:
    accepted: int
    skipped: list[tuple[int, str]]  # (position in the request, why)
    seq: int


def record_events(store: EventStore, engine: Engine, events: Sequence[NewEvent]) -> Recorded:
    """Check `events` against the served catalog, append the good ones durably; the bad ones are
    skipped with a reason (the rest of the batch is still stored)."""
    catalog = engine.retriever.catalog.row_of
    good: list[NewEvent] = []
    skipped: list[tuple[int, str]] = []
    for n, event in enumerate(events):
        try:
            checked = check_event(event, f"events[{n}]")
        except DataError as err:
            skipped.append((n, str(err)))
            continue
        if checked.item_id not in catalog:
            skipped.append((n, f"events[{n}]: unknown item id {checked.item_id!r}"[:300]))
            continue
        good.append(checked)
    seq = store.append(good) if good else store.heads()[0]
    return Recorded(len(good), skipped, seq)
