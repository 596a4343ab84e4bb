"""Ethical loss terms and the exact metrics they answer to. No Ray, no MLflow: usable in any PyTorch loop."""

from ethicsweep.objectives.metrics import (
    METRIC_DIRECTIONS,
    GroupRates,
    MetricReport,
    dp_gap,
    eo_gap,
    eopp_gap,
    error_gap,
    evaluate,
    worst_group_accuracy,
)

__all__ = [
    "METRIC_DIRECTIONS", "GroupRates", "MetricReport", "dp_gap", "eo_gap", "eopp_gap", "error_gap",
    "evaluate", "worst_group_accuracy",
]  # fmt: skip
