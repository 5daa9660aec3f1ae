"""Results JSON / Markdown / plots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recs.errors import ConfigError
from recs.evaluation.report import format_table, plot_metrics, write_results

ROWS = [
    {
        "dataset": "online_retail",
        "method": "popularity",
        "slice": "all",
        "metrics": {"recall@10": 0.1, "ndcg@10": 0.05, "users": 12.0},
        "notes": "leave_last_out, 12 users",
    },
    {
        "dataset": "online_retail",
        "method": "repeat",
        "slice": "all",
        "metrics": {"recall@10": 0.3, "ndcg@10": 0.25, "users": 12},
        "notes": "",
    },
    {
        "dataset": "online_retail",
        "method": "repeat",
        "slice": "cold_items",
        "metrics": {"recall@10": 0.0, "users": 3},
    },
]


def test_write_results_exact_shape(tmp_path: Path) -> None:
    json_path, md_path = write_results("retrieval", ROWS, tmp_path / "results")
    assert json_path == tmp_path / "results" / "retrieval.json"
    assert md_path == tmp_path / "results" / "retrieval.md"
    doc = json.loads(json_path.read_text())
    assert list(doc) == ["benchmark", "created", "machine", "versions", "rows"]
    assert doc["benchmark"] == "retrieval"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["created"])
    assert set(doc["machine"]) == {"cpu", "cores", "gpu"}
    assert isinstance(doc["machine"]["cpu"], str) and isinstance(doc["machine"]["cores"], int)
    assert doc["machine"]["gpu"] is None or isinstance(doc["machine"]["gpu"], str)
    assert doc["versions"]["recs"] == "0.1.0"
    assert all(isinstance(v, str) for v in doc["versions"].values())
    assert len(doc["rows"]) == 3
    for row in doc["rows"]:
        assert list(row) == ["dataset", "method", "slice", "metrics", "notes"]
        assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in row["metrics"].values())
    assert doc["rows"][0]["metrics"] == {"recall@10": 0.1, "ndcg@10": 0.05, "users": 12.0}
    assert isinstance(doc["rows"][1]["metrics"]["users"], int)  # a count given as an int stays one
    assert doc["rows"][2]["notes"] == ""
    md = md_path.read_text()
    assert md.startswith("# retrieval")
    assert "| dataset | method | slice | users | recall@10 | ndcg@10 |" in md
    assert "| online_retail | repeat | cold_items | 3 | 0.0000 | – |" in md
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "retrieval.json",
        "retrieval.md",
    ]


def test_write_results_refuses_bad_rows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not finite"):
        write_results("x", [{**ROWS[0], "metrics": {"ndcg@10": float("nan")}}], tmp_path)
    with pytest.raises(ConfigError, match="dataset"):
        write_results("x", [{k: v for k, v in ROWS[0].items() if k != "dataset"}], tmp_path)
    with pytest.raises(ConfigError, match="file name"):
        write_results("../escape", ROWS, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_format_table() -> None:
    table = format_table(ROWS, metrics=("ndcg@10", "recall@10", "mrr@10"))
    lines = table.strip().splitlines()
    assert lines[0] == "| dataset | method | slice | users | ndcg@10 | recall@10 |"
    assert lines[2] == "| online_retail | popularity | all | 12 | 0.0500 | 0.1000 |"
    assert len(lines) == 2 + len(ROWS)
    # None of the asked columns exists: every metric the rows have.
    assert (
        format_table(ROWS, metrics=("ndcg@5",)).splitlines()[0].endswith("| recall@10 | ndcg@10 |")
    )


def test_plot_metrics(tmp_path: Path) -> None:
    path = plot_metrics(ROWS, tmp_path / "plots" / "ndcg.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError):
        plot_metrics(ROWS, tmp_path / "none.png", metric="auc@10")


def test_report_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from recs.evaluation.report import write_results\n"
        f"write_results('t', [], Path({str(tmp_path)!r}))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == []
