"""Per-user serving state kept ready: each user's events as arrays, built once from the log and
appended to per event (`add_events`), so that a request never filters the event frame.

A request reads one user's arrays (O(their events)); the derived `UserContext` pieces (tower
text, purchase history, interactions) are cached per user and dropped when that user's events
change. What is derived follows the same rules as `pairs.state_from_events` (one owner: the text
is rendered by `pairs._user_state`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from recs.data.schema import epoch_seconds
from recs.retrieval.pairs import Catalog, UserState, user_state_of_rows
from recs.retrieval.rowmap import RowMap

__all__ = ["UserArrays", "UserStore"]

_CACHE_SIZE = 50_000  # users whose derived state is kept (their arrays are always kept)


@dataclass
class UserArrays:
    """One user's events, chronological: catalog rows, event kinds (codes into the store's
    `kinds`), epoch seconds. Codes, not strings: a large log holds tens of millions of events."""

    rows: np.ndarray  # int64
    kinds: np.ndarray  # int16
    times: np.ndarray  # float64


@dataclass
class UserDerived:
    state: UserState
    history_rows: np.ndarray
    history_times: np.ndarray
    interactions: list[tuple[int, str, float]]


class UserStore:
    """user id -> UserArrays, plus an LRU of what requests derive from them."""

    def __init__(self, catalog: Catalog, max_events: int, max_chars: int) -> None:
        self.catalog = catalog
        self.max_events = max_events
        self.max_chars = max_chars
        self._users: dict[str, UserArrays] = {}
        self._derived: OrderedDict[str, UserDerived] = OrderedDict()
        self.kinds: list[str] = []  # event kind by code
        self._code: dict[str, int] = {}

    def _codes(self, kinds: Sequence[str]) -> np.ndarray:
        for kind in kinds:
            if kind not in self._code:
                self._code[kind] = len(self.kinds)
                self.kinds.append(kind)
        return np.fromiter((self._code[k] for k in kinds), dtype=np.int16, count=len(kinds))

    @classmethod
    def from_events(cls, events: pl.DataFrame, catalog: Catalog, max_events: int, max_chars: int) -> UserStore:
        """From a log of catalog items only (user_id, item_id, timestamp, event). One vectorised
        pass: the log sorted by time (as the per-user frames were), then split by user."""
        store = cls(catalog, max_events, max_chars)
        if events.height == 0:
            return store
        ordered = events.sort("timestamp").with_columns(pl.col("user_id").cast(pl.Utf8))
        users = ordered["user_id"].to_numpy()
        item_ids = ordered["item_id"].to_list()
        rows = np.fromiter((catalog.row_of[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
        times = epoch_seconds(ordered["timestamp"])
        store._codes(sorted(ordered["event"].unique().to_list()))
        kinds = ordered["event"].replace_strict(store._code, return_dtype=pl.Int16).to_numpy()
        order = np.argsort(users, kind="stable")  # stable: each user's events stay chronological
        users_sorted = users[order]
        starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            picked = order[start:end]
            store._users[str(users_sorted[start])] = UserArrays(rows[picked], kinds[picked], times[picked])
        return store

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def __len__(self) -> int:
        return len(self._users)

    def user_ids(self) -> list[str]:
        return list(self._users)

    def arrays(self, user_id: str) -> UserArrays | None:
        return self._users.get(user_id)

    def derived(self, user_id: str) -> UserDerived | None:
        """The user's tower state, purchase history and interactions (cached)."""
        if user_id in self._derived:
            self._derived.move_to_end(user_id)
            return self._derived[user_id]
        arrays = self._users.get(user_id)
        if arrays is None:
            return None
        # The tower reads the last `max_events` events only: no need to look further back.
        kinds = [self.kinds[c] for c in arrays.kinds.tolist()]
        recent = max(0, len(arrays.rows) - self.max_events)
        state = user_state_of_rows(kinds[recent:], arrays.rows[recent:].tolist(), self.catalog.titles,
                                   self.max_events, self.max_chars)
        bought = arrays.kinds == self._code.get("purchase", -1)
        rows, times = arrays.rows[bought], arrays.times[bought]
        rows.setflags(write=False)  # shared by every request of this user until their next event
        times.setflags(write=False)
        out = UserDerived(state, rows, times, list(zip(arrays.rows.tolist(), kinds, arrays.times.tolist(), strict=True)))
        self._derived[user_id] = out
        if len(self._derived) > _CACHE_SIZE:
            self._derived.popitem(last=False)
        return out

    def add_events(self, user_id: str, rows: Sequence[int], kinds: Sequence[str], times: Sequence[float]) -> None:
        """Append a user's new events (catalog rows, kinds, epoch seconds); a new user is created.
        Events older than the user's last one are merged in time order."""
        new_rows = np.asarray(rows, dtype=np.int64)
        new_times = np.asarray(times, dtype=np.float64)
        old = self._users.get(user_id)
        if old is None:
            old = UserArrays(np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, np.float64))
        all_rows = np.concatenate([old.rows, new_rows])
        all_times = np.concatenate([old.times, new_times])
        all_kinds = np.concatenate([old.kinds, self._codes(list(kinds))])
        if len(old.times) and len(new_times) and new_times.min() < old.times[-1]:
            order = np.argsort(all_times, kind="stable")
            all_rows, all_times, all_kinds = all_rows[order], all_times[order], all_kinds[order]
        self._users[user_id] = UserArrays(all_rows, all_kinds, all_times)
        self._derived.pop(user_id, None)

    def rebased(self, catalog: Catalog, rows: RowMap) -> UserStore:
        """This store over a changed catalog (`rows`): events of removed items leave each
        history; arrays no removal touches are shared (they are replaced, never changed in place).
        The derived states are rebuilt on use (titles may have changed)."""
        out = UserStore(catalog, self.max_events, self.max_chars)
        out.kinds, out._code = list(self.kinds), dict(self._code)
        if not rows.removes:
            out._users = dict(self._users)  # old rows keep their numbers; new ones come after
            return out
        users = list(self._users.items())  # a copy: a forget may run meanwhile
        if not users:
            return out
        # One pass over every event (not one per user): mapped, filtered, split back by user.
        lengths = np.fromiter((len(a.rows) for _, a in users), dtype=np.int64, count=len(users))
        mapped = rows.new_of_old[np.concatenate([a.rows for _, a in users])]
        keep = mapped >= 0
        kinds = np.concatenate([a.kinds for _, a in users])[keep]
        times = np.concatenate([a.times for _, a in users])[keep]
        owner = np.repeat(np.arange(len(users)), lengths)
        bounds = np.r_[0, np.cumsum(np.bincount(owner[keep], minlength=len(users)))]
        new_rows = mapped[keep]
        for (user_id, _), start, end in zip(users, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            if end > start:  # as a reload would: a user left without events is unknown
                out._users[user_id] = UserArrays(new_rows[start:end], kinds[start:end], times[start:end])
        return out

    def forget(self, user_id: str) -> None:
        self._users.pop(user_id, None)
        self._derived.pop(user_id, None)
