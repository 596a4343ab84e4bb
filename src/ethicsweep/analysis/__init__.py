"""Analysis: Pareto fronts, held-out evaluation, the MLflow registry and the report."""

from ethicsweep.analysis.pareto import front_ranks, hypervolume, minimization_form, reference_point
from ethicsweep.analysis.sweep import SweepAnalysis, analyze_sweep

__all__ = ["SweepAnalysis", "analyze_sweep", "front_ranks", "hypervolume", "minimization_form", "reference_point"]
