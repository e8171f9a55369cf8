"""Evaluation of reward models against human labels: statistics (`stats`) and report output (`report`).

Importing this package needs only numpy and scipy; scoring manifests with models lives in `evaluation.run`.
"""

from icreward.evaluation.report import (
    build_pair_rows,
    format_per_mode_table,
    format_table,
    write_report,
)
from icreward.evaluation.stats import (
    best_tie_threshold,
    bootstrap_ci,
    correlations,
    evaluate_pairs,
    evaluate_points,
    pair_accuracy,
    pair_accuracy_ties,
    per_group_accuracy,
)

__all__ = [
    "best_tie_threshold",
    "bootstrap_ci",
    "build_pair_rows",
    "correlations",
    "evaluate_pairs",
    "evaluate_points",
    "format_per_mode_table",
    "format_table",
    "pair_accuracy",
    "pair_accuracy_ties",
    "per_group_accuracy",
    "write_report",
]
