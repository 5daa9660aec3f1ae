"""`PairBudget`: the one rule by which a cross-encoder (torch or ONNX) scores pairs within a deadline.

Pairs are scored in chunks. Without a deadline every chunk has `max_chunk` pairs (the scores do not
depend on timing). With one, each chunk is sized from the measured cost per pair so that it takes
at most `share` of the time left; scoring is refused (None: the caller serves its fallback, flagged
`degraded`) as soon as the pairs still to score are predicted not to fit in the time left, and the
deadline is checked again after every chunk. A chunk can therefore overrun the deadline only by
what it cost beyond its prediction, never by a whole batch planned without looking at the clock.

The cost per pair is a running estimate kept per scorer instance (so requests on other threads,
which slow each other down, raise it for everyone), seeded by a small first chunk. A refused request
measures nothing, so an estimate raised by a burst of load would refuse forever: once it is older
than `stale_s`, a request whose rest does not fit still scores one chunk planned as any other (at
most `share` of its time left, by the old estimate) to measure again, and is refused after it if
the rest still does not fit. The estimate is never lowered without a measurement, so a chunk is
never planned on a guess (lowering it per refusal let one mis-planned chunk overrun the budget by
several times). numpy only.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

__all__ = ["PairBudget", "ScoreChunk"]

# Scores of the pairs [start, stop) of a request.
ScoreChunk = Callable[[int, int], np.ndarray]


class PairBudget:
    def __init__(
        self,
        max_chunk: int = 32,
        first_chunk: int = 2,
        share: float = 0.5,
        stale_s: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.max_chunk = max_chunk
        self.first_chunk = first_chunk
        self.share = share  # of the time left that one chunk may be planned to take
        self._clock = clock  # None: time.monotonic, looked up per call (tests patch it)
        self.stale_s = stale_s  # an estimate older than this is re-measured by a probe chunk
        self._per_pair: float | None = None  # seconds; None until a chunk was measured
        self._measured_at = -math.inf  # now() of the last measurement
        self._lock = threading.Lock()

    @property
    def seconds_per_pair(self) -> float | None:
        return self._per_pair

    def now(self) -> float:
        return (self._clock or time.monotonic)()

    def run(self, n: int, score_chunk: ScoreChunk, deadline: float | None = None) -> np.ndarray | None:
        """Scores of `n` pairs, chunk by chunk; None when `deadline` (in `now()` time) cannot be
        or was not met."""
        out = np.zeros(n, dtype=np.float32)
        start = 0
        while start < n:
            size = self.max_chunk if deadline is None else self.chunk_size(n - start, deadline - self.now())
            if size == 0:
                return None
            stop = min(n, start + size)
            began = self.now()
            out[start:stop] = np.asarray(score_chunk(start, stop), dtype=np.float32).reshape(-1)
            self.observe(stop - start, self.now() - began)
            start = stop
            if deadline is not None and self.now() > deadline:
                return None
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    def chunk_size(self, remaining: int, left: float) -> int:
        """Pairs to score next with `left` seconds to go; 0: refuse (the rest cannot fit)."""
        if left <= 0:
            return 0
        per_pair = self._per_pair
        if per_pair is None:
            return min(self.first_chunk, remaining, self.max_chunk)
        remeasure = False
        if per_pair * remaining > left:
            if self.now() - self._measured_at <= self.stale_s:
                return 0
            remeasure = True  # stale: one chunk planned as usual measures again, then we decide
        fits = math.floor(self.share * left / per_pair) if per_pair > 0 else remaining
        if remeasure and fits < 1:
            return 0
        return max(1, min(self.max_chunk, remaining, fits))

    def observe(self, pairs: int, seconds: float) -> None:
        """Fold one chunk's measured cost into the estimate: quick to rise (contention shows at
        once), slower to fall; a stale estimate (see the module doc) is replaced."""
        if pairs <= 0 or not math.isfinite(seconds):
            return
        sample = max(seconds, 0.0) / pairs
        with self._lock:
            old = self._per_pair
            now = self.now()
            stale = now - self._measured_at > self.stale_s
            self._measured_at = now
            if old is None or stale:  # a stale estimate is replaced, not averaged
                self._per_pair = sample
            else:
                weight = 0.5 if sample > old else 0.2
                self._per_pair = (1 - weight) * old + weight * sample
