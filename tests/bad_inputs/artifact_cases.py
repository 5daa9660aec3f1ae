"""Bad-input cases: artifact. See `tests/bad_inputs/case.py` for what a case is."""

from __future__ import annotations

from tests.bad_inputs.case import CliCase

CASES: list[CliCase] = []
