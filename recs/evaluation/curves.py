"""ROC and precision-recall curves of a scorer used as a classifier (relevant vs not), with AUCs.

Plain numpy functions on (labels, scores) arrays, plus one plotting helper. Ties in the scores are
handled as one threshold step (the curve goes diagonally through a tie), as scikit-learn does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recs.errors import ConfigError
from recs.io import atomic_write_file


def _checked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel() > 0
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ConfigError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if not np.isfinite(s).all():
        raise ConfigError("scores contain NaN or infinity")
    return y, s


def _threshold_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives when predicting 'relevant' at each distinct score, high to low."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tp = np.cumsum(y)[last_of_tie].astype(np.float64)
    fp = (last_of_tie + 1 - tp).astype(np.float64)
    return tp, fp


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate), starting at (0, 0)."""
    y, s = _checked(labels, scores)
    if y.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    tp, fp = _threshold_counts(y, s)
    n_pos, n_neg = float(y.sum()), float(y.size - y.sum())
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.zeros(tp.size + 1)
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.zeros(fp.size + 1)
    return fpr, tpr


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; 0.5 when one class is absent (no ranking to judge)."""
    y, _ = _checked(labels, scores)
    if y.all() or not y.any():
        return 0.5
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision), starting at recall 0 with the first threshold's precision."""
    y, s = _checked(labels, scores)
    if not y.any():
        return np.array([0.0, 1.0]), np.array([0.0, 0.0])
    tp, fp = _threshold_counts(y, s)
    precision = tp / (tp + fp)
    recall = tp / float(y.sum())
    return np.r_[0.0, recall], np.r_[precision[0], precision]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the PR curve as a step sum: sum over thresholds of (recall gain) * precision."""
    y, _ = _checked(labels, scores)
    if not y.any():
        return 0.0
    recall, precision = pr_curve(labels, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def plot_roc_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "") -> Path:
    """One PNG, ROC on the left and PR on the right, one line per scorer with its AUC in the legend.
    `curves`: name -> (labels, scores)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ConfigError("no curves to plot")
    fig = Figure(figsize=(10.0, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    roc_ax, pr_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    base_rate = 0.0
    for name, (labels, scores) in curves.items():
        fpr, tpr = roc_curve(labels, scores)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
        recall, precision = pr_curve(labels, scores)
        pr_ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision(labels, scores):.3f})")
        base_rate = max(base_rate, float(np.mean(np.asarray(labels) > 0)) if len(labels) else 0.0)
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    pr_ax.axhline(base_rate, color="grey", linestyle=":", linewidth=1)
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write_file(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
