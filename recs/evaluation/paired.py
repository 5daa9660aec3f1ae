"""Paired comparisons of two methods on the same test users: the mean per-user difference and its
95% confidence interval, so that a quality claim is never a bare mean.

Both methods are scored per user (`evaluate(..., per_user=...)`); only users scored by both count.
The interval is the normal approximation of the mean paired difference (mean +- 1.96 * sd / sqrt(n)),
which on a few hundred users or more agrees with a paired bootstrap to the third decimal.
"""

from __future__ import annotations

from collections.abc import Mapping

# The formula lives with the batch metrics (a stage, which never imports evaluation, uses it to
# decide its own defaults) and is re-exported here.
from recs.retrieval.metrics import Z_95, Z_95_ONE_SIDED, paired_difference

__all__ = ["Z_95", "Z_95_ONE_SIDED", "format_paired", "paired_difference"]


def format_paired(name: str, reference: str, result: Mapping[str, float]) -> str:
    """One line: `engine vs tifu_knn: 0.281 vs 0.268 (1.049x), delta +0.0131 [95% CI +0.0040, +0.0222], 4123 users`."""
    return (
        f"{name} vs {reference}: {result['mean_method']:.4f} vs {result['mean_reference']:.4f} "
        f"({result['ratio']:.3f}x), delta {result['delta']:+.4f} "
        f"[95% CI {result['ci_low']:+.4f}, {result['ci_high']:+.4f}], {int(result['users'])} users"
    )
