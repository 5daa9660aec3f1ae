"""The bad-input corpus (README, "Data format"): every case gets its exit code, a message with
the expected words, and never a traceback. Cases live in `tests/bad_inputs/`, one module per
group: data files, CLI options, API arguments, artifact files, the event store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recs.cli import app
from tests.bad_inputs import (
    api_cases,
    artifact_cases,
    cli_cases,
    data_cases,
    feedback_cases,
    items_cases,
)
from tests.bad_inputs.case import ApiCase, CliCase, Workspace

CLI_CASES: list[CliCase] = [*data_cases.CASES, *cli_cases.CASES, *artifact_cases.CASES, *feedback_cases.CASES,
                            *items_cases.CASES]
API_CASES: list[ApiCase] = [*api_cases.CASES]


def _param(case: CliCase | ApiCase) -> object:
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if case.slow else [])


def test_the_corpus_is_large_and_ids_are_unique() -> None:
    ids = [c.id for c in [*CLI_CASES, *API_CASES]]
    assert len(ids) >= 50
    assert len(ids) == len(set(ids))


def _run_cli(case: CliCase, ws: Workspace) -> tuple[int, str]:
    args = [ws.format(a) for a in case.args]
    if case.subprocess:
        recs = Path(sys.executable).parent / "recs"
        env = {**os.environ, **case.env}
        done = subprocess.run([str(recs), *args], capture_output=True, text=True, env=env, timeout=600, check=False)
        return done.returncode, done.stdout + done.stderr
    result = CliRunner().invoke(app, args, env=case.env or None)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught exception is a failure of the corpus
    return result.exit_code, result.output


@pytest.mark.parametrize("case", [_param(c) for c in CLI_CASES])
def test_cli_bad_input(case: CliCase, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ws = Workspace(request, tmp_path)
    if case.setup is not None:
        case.setup(ws)
    code, output = _run_cli(case, ws)
    assert "Traceback" not in output, output
    assert code == case.exit_code, output
    lowered = output.lower()
    missing = [w for w in case.words if w.lower() not in lowered]
    assert not missing, f"missing {missing} in: {output}"


@pytest.mark.parametrize("case", [_param(c) for c in API_CASES])
def test_api_bad_input(case: ApiCase, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    ws = Workspace(request, tmp_path)
    with pytest.raises(case.error) as caught:
        case.call(ws)
    message = str(caught.value).lower()
    missing = [w for w in case.words if w.lower() not in message]
    assert not missing, f"missing {missing} in: {caught.value}"
