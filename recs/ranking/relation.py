"""The user's relation to an item, in words (torch-free: the ONNX runtime uses it too)."""

from __future__ import annotations


def relation_words(times_bought: float, days_since: float, interval: float, touched: float) -> str:
    """The user's relation to an item in words (what the cross-encoder reads beside the item)."""
    if times_bought >= 1:
        text = f"bought {int(times_bought)} time{'s' if times_bought > 1 else ''}, last {round(days_since)} days ago"
        if interval > 0:
            text += f", about every {round(interval)} days"
        return text
    if touched > 0:
        return f"never bought, looked at {int(touched)} time{'s' if touched > 1 else ''}"
    return "never bought"
