"""Simulated crashes shared by the atomic-write tests."""

from __future__ import annotations

import os

import pytest


def fail_replace_on(monkeypatch: pytest.MonkeyPatch, failing: set[int]) -> dict[str, int]:
    """os.replace raises on the given calls (1-based), as a crash at that rename would."""
    real = os.replace
    calls = {"n": 0}

    def fake(src, dst, *a, **kw):
        calls["n"] += 1
        if calls["n"] in failing:
            raise OSError("simulated crash")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", fake)
    return calls
