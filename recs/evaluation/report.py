"""Reports: Markdown tables, the benchmark results JSON, and bar charts.

Results format (one shape for every benchmark, see DESIGN.md):
{"benchmark": name, "created": "YYYY-MM-DDTHH:MM:SSZ", "machine": {"cpu", "cores", "gpu"},
 "versions": {package: version}, "rows": [{"dataset", "method", "slice", "metrics", "notes"}]}
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recs.errors import ConfigError
from recs.io import atomic_write_file, atomic_write_text

__all__ = [
    "DEFAULT_TABLE_METRICS",
    "format_table",
    "machine_info",
    "normalise_rows",
    "plot_metrics",
    "results_document",
    "versions",
    "write_results",
]

DEFAULT_TABLE_METRICS: tuple[str, ...] = (
    "recall@10",
    "ndcg@10",
    "mrr@10",
    "hit_rate@10",
    "recall@50",
    "ndcg@50",
    "coverage@10",
    "diversity@10",
    "popularity_bias@10",
)
# Reported name -> distributions that provide it (the first one installed wins).
_PACKAGES: dict[str, tuple[str, ...]] = {
    "recs": ("recs",),
    "python": (),
    "numpy": ("numpy",),
    "polars": ("polars",),
    "scipy": ("scipy",),
    "torch": ("torch",),
    "transformers": ("transformers",),
    "faiss": ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "implicit": ("implicit",),
    "bm25s": ("bm25s",),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# ---------------------------------------------------------------------------------------------
# Rows


def normalise_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows in the results format, checked: dataset, method, slice (non-empty str), metrics
    (str -> finite number; ints, the counts, stay ints), notes (str, "" when absent). ConfigError names the bad row."""
    out: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ConfigError(f"row {n}: not a mapping")
        clean: dict[str, Any] = {}
        for key in ("dataset", "method", "slice"):
            value = row.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"row {n}: {key!r} must be a non-empty string, got {value!r}")
            clean[key] = value
        metrics = row.get("metrics")
        if not isinstance(metrics, Mapping):
            raise ConfigError(f"row {n}: 'metrics' must be a mapping")
        clean["metrics"] = {}
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"row {n}: metric {name!r} is not a number: {value!r}")
            if not math.isfinite(float(value)):
                raise ConfigError(f"row {n}: metric {name!r} is not finite: {value!r}")
            clean["metrics"][str(name)] = value if isinstance(value, int) else float(value)  # counts stay counts
        notes = row.get("notes", "")
        clean["notes"] = "" if notes is None else str(notes)
        out.append(clean)
    return out


# ---------------------------------------------------------------------------------------------
# Tables


def _cell(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or metric == "users" or metric.endswith("_n"):  # counts, bytes
        return f"{value:.0f}"
    if metric.endswith(("_ms", "_s")) or metric.startswith("seconds"):  # times
        return f"{value:.1f}"
    return f"{value:.4f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = DEFAULT_TABLE_METRICS
) -> str:
    """A Markdown table: dataset (when any row has one), method, slice, users, then `metrics`
    (columns no row has are dropped, all the rows' metrics when none is left; a missing value
    shows as "–")."""
    present = [m for m in metrics if any(m in (r.get("metrics") or {}) for r in rows)]
    if not present:
        # None of the asked columns exists (other cut-offs, say): show what the rows have.
        present = list(
            dict.fromkeys(m for r in rows for m in (r.get("metrics") or {}) if m != "users")
        )
    with_dataset = any(r.get("dataset") for r in rows)
    with_users = any("users" in (r.get("metrics") or {}) for r in rows)
    header = (["dataset"] if with_dataset else []) + ["method", "slice"]
    header += (["users"] if with_users else []) + present
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for r in rows:
        values = r.get("metrics") or {}
        cells = ([_escape(str(r.get("dataset", "")))] if with_dataset else []) + [
            _escape(str(r.get("method", ""))),
            _escape(str(r.get("slice", ""))),
        ]
        if with_users:
            cells.append(_cell(values.get("users"), "users"))
        cells += [_cell(values.get(m), m) for m in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Machine and versions


def _cpu_name() -> str:
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str | None:
    # torch only when some caller already imported it: a report must not pay for loading torch.
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return str(torch.cuda.get_device_name(0))
        except Exception:  # a broken CUDA setup must not break a report
            pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and names:
            return names[0]
    return None


def machine_info() -> dict[str, Any]:
    """{"cpu": model name, "cores": logical cores, "gpu": first GPU's name or None}."""
    return {"cpu": _cpu_name(), "cores": os.cpu_count() or 1, "gpu": _gpu_name()}


def versions() -> dict[str, str]:
    """Installed versions of the packages results depend on (missing ones are left out), read
    from package metadata: nothing is imported."""
    out: dict[str, str] = {}
    for name, dists in _PACKAGES.items():
        if name == "python":
            out[name] = platform.python_version()
            continue
        for dist in dists:
            try:
                out[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def results_document(
    name: str, rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The results JSON object for benchmark `name` (rows checked by `normalise_rows`); `extra`
    adds top-level keys (e.g. "paired"), never one of the format's own."""
    document = {
        "benchmark": name,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "versions": versions(),
        "rows": normalise_rows(rows),
    }
    clash = sorted(set(extra or {}) & set(document))
    if clash:
        raise ConfigError(f"extra key(s) {', '.join(clash)} would replace the results format's own")
    return {**document, **(extra or {})}


def _markdown(document: Mapping[str, Any], sections: Mapping[str, Sequence[str]] | None = None) -> str:
    rows = document["rows"]
    metrics: list[str] = []
    for r in rows:
        metrics.extend(m for m in r["metrics"] if m not in metrics and m != "users")
    machine = document["machine"]
    lines = [
        f"# {document['benchmark']}",
        "",
        f"Created {document['created']} on {machine['cpu']} ({machine['cores']} cores"
        + (f", GPU {machine['gpu']})" if machine["gpu"] else ", no GPU)"),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in document["versions"].items()),
        "",
        format_table(rows, metrics) if rows else "(no rows)\n",
    ]
    notes: dict[tuple[str, str], str] = {}
    for r in rows:
        if r["notes"]:
            notes.setdefault((r["dataset"], r["method"]), r["notes"])
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- **{d} / {m}**: {_escape(text)}" for (d, m), text in notes.items()]
        lines.append("")
    for title, section in (sections or {}).items():
        lines += [f"## {title}", "", *(f"- {_escape(line)}" for line in section), ""]
    return "\n".join(lines)


def write_results(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    extra: Mapping[str, Any] | None = None,
    sections: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.json` (the results format, plus `extra`'s top-level keys) and
    `<name>.md` beside it (plus a bulleted `## title` section per `sections` entry), each
    atomically. Returns (json_path, md_path)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"results name must be a plain file name (letters, digits, _ . + -), got {name!r}"
        )
    document = results_document(name, rows, extra)
    out_dir = Path(out_dir)
    json_path = atomic_write_text(
        out_dir / f"{name}.json", json.dumps(document, indent=2, allow_nan=False) + "\n"
    )
    md_path = atomic_write_text(out_dir / f"{name}.md", _markdown(document, sections))
    return json_path, md_path


# ---------------------------------------------------------------------------------------------
# Plots


def plot_metrics(rows: Sequence[Mapping[str, Any]], path: Path, metric: str = "ndcg@10") -> Path:
    """A grouped bar chart PNG of `metric`: one group per (dataset, slice), one bar per method."""
    # The object API with an explicit Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in rows if metric in (r.get("metrics") or {})]
    if not rows:
        raise ConfigError(f"no row has metric {metric!r}")
    datasets = list(dict.fromkeys(str(r.get("dataset", "")) for r in rows))
    groups = list(dict.fromkeys((str(r.get("dataset", "")), str(r["slice"])) for r in rows))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    value = {
        (str(r.get("dataset", "")), str(r["slice"]), str(r["method"])): float(r["metrics"][metric])
        for r in rows
    }

    width = 0.8 / len(methods)
    fig = Figure(figsize=(max(6.0, 1.5 + len(groups) * (0.45 * len(methods) + 0.5)), 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for m, method in enumerate(methods):
        xs = [g + (m - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        ys = [value.get((d, s, method), 0.0) for d, s in groups]
        ax.bar(xs, ys, width=width, label=method)
    ax.set_xticks(list(range(len(groups))))
    ax.set_xticklabels([s if len(datasets) == 1 else f"{d}\n{s}" for d, s in groups])
    ax.set_ylabel(metric)
    ax.set_title(metric + (f" — {datasets[0]}" if len(datasets) == 1 and datasets[0] else ""))
    ax.legend(fontsize="small", ncols=min(len(methods), 4))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    return atomic_write_file(path, lambda tmp: fig.savefig(tmp, format="png"))
