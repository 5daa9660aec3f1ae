"""A reason for every recommended item, from the features the ranker already has (no model call)."""

from __future__ import annotations

import numpy as np

from recs.data import category as cat
from recs.retrieval.candidates import CandidateSet
from recs.retrieval.retriever import Retriever, UserContext


def reason(retriever: Retriever, context: UserContext, cands: CandidateSet, j: int) -> str:
    f = {name: float(values[j]) for name, values in cands.features.items()}
    row = int(cands.item_rows[j])
    if f["times_bought"] >= 2 and f["rebuy_interval_days"] > 0:
        every = _period(f["rebuy_interval_days"])
        due = " (due again)" if f["rebuy_due"] >= 0.8 else ""
        return f"you buy this every ~{every}{due}"
    if f["times_bought"] >= 1:
        return f"you bought this {round(f['days_since_bought'])} days ago"
    source = int(cands.cooc_source[j])
    if f["from_cooc"] > 0 and source >= 0:
        return f"because you bought {retriever.catalog.titles[source]}"
    history = [r for r in dict.fromkeys(context.state.history_rows[::-1]) if r != row][:20]
    if f["from_two_tower"] > 0 and history:
        sims = retriever.item_vectors[history] @ retriever.item_vectors[row]
        nearest = history[int(np.argmax(sims))]
        return f"because you looked at {retriever.catalog.titles[nearest]}"
    if f["from_two_tower"] > 0 and not history and context.state.text:
        return "matches your search or session"
    if f["from_als"] > 0:
        return "bought by shoppers who buy what you buy"
    category = cat.top(retriever.categories[row])
    return f"popular in {category}" if category else "popular right now"


def _period(days: float) -> str:
    if days >= 13:
        weeks = round(days / 7)
        return f"{weeks} week{'s' if weeks > 1 else ''}"
    rounded = max(1, round(days))
    return f"{rounded} day{'s' if rounded > 1 else ''}"
