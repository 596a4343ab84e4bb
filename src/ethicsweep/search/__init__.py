"""Search: spaces, the Optuna searcher, the driver's MLflow logger and the sweep runner."""

from ethicsweep.search.optuna_searcher import OptunaSearcher, SamplerSpec
from ethicsweep.search.runner import SweepOutcome, TrialEvent, connect, run_sweep

__all__ = ["OptunaSearcher", "SamplerSpec", "SweepOutcome", "TrialEvent", "connect", "run_sweep"]
