"""ROC / PR curves and their AUCs, against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from recs.errors import ConfigError
from recs.evaluation.curves import average_precision, plot_roc_pr, pr_curve, roc_auc, roc_curve


def test_perfect_and_reversed_scores() -> None:
    labels = np.array([1, 1, 0, 0])
    assert roc_auc(labels, np.array([4.0, 3, 2, 1])) == pytest.approx(1.0)
    assert roc_auc(labels, np.array([1.0, 2, 3, 4])) == pytest.approx(0.0)
    assert average_precision(labels, np.array([4.0, 3, 2, 1])) == pytest.approx(1.0)


def test_ties_count_half() -> None:
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    fpr, tpr = roc_curve(np.array([1, 0]), np.array([0.5, 0.5]))
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]


def test_one_class_only_is_neutral() -> None:
    assert roc_auc(np.array([0, 0]), np.array([0.1, 0.2])) == 0.5
    assert average_precision(np.array([0, 0]), np.array([0.1, 0.2])) == 0.0


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ConfigError, match="NaN"):
        roc_auc(np.array([1, 0]), np.array([np.nan, 0.0]))


def test_agrees_with_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.2
    scores = np.round(rng.normal(size=500) + labels, 1)  # rounding makes ties
    assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert average_precision(labels, scores) == pytest.approx(metrics.average_precision_score(labels, scores))
    recall, precision = pr_curve(labels, scores)
    assert precision.shape == recall.shape
    assert recall[0] == 0.0 and recall[-1] == pytest.approx(1.0) and np.all(np.diff(recall) >= 0)


def test_plot_writes_png(tmp_path) -> None:
    labels = np.array([1, 0, 1, 0, 0])
    path = plot_roc_pr({"a": (labels, np.arange(5.0)), "b": (labels, -np.arange(5.0))}, tmp_path / "curves.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
