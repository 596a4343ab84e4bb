"""A multi-objective asynchronous successive-halving scheduler for Ray Tune (MO-ASHA).

Ray's ASHA and HyperBand rank trials on one metric. :class:`MultiObjectiveASHA` ranks
them on several objectives, in the manner of MO-ASHA (Schmucker et al., 2021,
"Multi-objective Asynchronous Successive Halving"), in ASHA's stopping form: each trial
is judged once at each rung it reaches, against the trials recorded at that rung so far.

Within a non-dominated rank, trials are ordered by NSGA-II's crowding distance (larger is
better; the extremes of a rank have infinite distance), not by MO-ASHA's epsilon-net. The
epsilon-net picks points greedily by distance in objective space, so its order depends on
how objectives of different units are scaled and on which point starts the net; the
crowding distance is normalised per objective within the rank, needs no scaling choice,
keeps a rank's extreme trade-offs, and is pymoo's own (the one its NSGA-II uses).
"""

from __future__ import annotations

import copy
import math
import pickle
from typing import TYPE_CHECKING, Any

import numpy as np
from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from ray.tune.experiment import Trial
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from ethicsweep.search.optuna_searcher import objective_problem

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

Vector = tuple[float, ...]


def rung_milestones(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """The rungs ``grace_period * reduction_factor**k`` (k = 0, 1, ...) strictly below ``max_t``."""
    milestones = []
    milestone = grace_period
    while milestone < max_t:
        milestones.append(milestone)
        milestone *= reduction_factor
    return milestones


def promotion_order(points: list[Vector | None]) -> list[int]:
    """Indices of ``points`` (minimization form; None = no valid vector), best first.

    Valid points are ordered by non-dominated rank (0 first), then by crowding distance
    within their rank (larger first), then by index (earlier first); None points come
    last, in index order.
    """
    valid = [i for i, point in enumerate(points) if point is not None]
    invalid = [i for i, point in enumerate(points) if point is None]
    if not valid:
        return invalid
    matrix = np.array([points[i] for i in valid], dtype=np.float64)
    _, ranks = NonDominatedSorting().do(matrix, return_rank=True)
    crowding = np.zeros(len(valid))
    for rank in np.unique(ranks):
        members = ranks == rank
        crowding[members] = get_crowding_function("cd").do(matrix[members])
    order = np.lexsort((np.arange(len(valid)), -crowding, ranks))
    return [valid[j] for j in order] + invalid


class MultiObjectiveASHA(FIFOScheduler):
    """Asynchronous successive halving on several objectives.

    ``objectives`` lists ``(result key, "max" | "min")`` pairs. Rungs lie at
    ``grace_period * reduction_factor**k`` below ``max_t`` (see :func:`rung_milestones`);
    a trial whose ``time_attr`` reaches ``max_t`` is stopped, as finished.

    Promotion rule. When a trial reports a ``time_attr`` at or past a rung it has not been
    recorded at, and that rung is the highest it has reached, its objective vector
    (minimization form) is recorded there and, with ``n`` trials now recorded at the rung
    (itself included):

    1. a vector with a missing, NaN or infinite objective is ranked worst: STOP, unless the
       trial is the only one recorded at the rung (``n == 1``);
    2. otherwise, if ``n < reduction_factor``: CONTINUE;
    3. otherwise CONTINUE iff the trial is among the first ``max(1, floor(n /
       reduction_factor))`` of the rung's trials in :func:`promotion_order` (non-dominated
       rank, then crowding distance, then arrival at the rung); else STOP.

    A result without ``time_attr``, or between rungs, continues. Rule 2 is the paper's
    ASHA (nothing is promoted from a rung before ``reduction_factor`` trials reach it);
    Ray's single-metric ASHA instead compares each trial with a percentile of those
    recorded before it, and can stop the second one.

    Records outlive their trials (a completed, stopped or removed trial still counts at
    the rungs it reached), so the scheduler keeps no per-trial state to forget.
    ``stopped_at`` counts the trials stopped at each rung, for benchmarks.
    """

    def __init__(
        self,
        objectives: list[tuple[str, str]],
        time_attr: str = "training_iteration",
        grace_period: int = 1,
        reduction_factor: float = 3,
        max_t: int = 100,
    ):
        _validate(objectives, grace_period, reduction_factor, max_t)
        super().__init__()
        self._objectives = list(objectives)
        self._time_attr = time_attr
        self._reduction_factor = reduction_factor
        self._max_t = max_t
        self.rungs = rung_milestones(grace_period, reduction_factor, max_t)
        self.recorded: dict[float, dict[str, Vector | None]] = {rung: {} for rung in self.rungs}
        self.stopped_at: dict[float, int] = {rung: 0 for rung in self.rungs}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Accept no metric or mode from ``TuneConfig``: the objectives are this scheduler's
        own (Ray then raises, naming the conflict)."""
        return metric is None and mode is None

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        time = result.get(self._time_attr)
        if not isinstance(time, (int, float)):
            return TrialScheduler.CONTINUE
        if time >= self._max_t:
            return TrialScheduler.STOP
        rung = self._rung_to_record(trial.trial_id, time)
        if rung is None:
            return TrialScheduler.CONTINUE
        self.recorded[rung][trial.trial_id] = self._vector(result)
        decision = self._decide(rung, trial.trial_id)
        if decision == TrialScheduler.STOP:
            self.stopped_at[rung] += 1
        return decision

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict | None) -> None:
        """Record the final result at the rung it reached, if not recorded there yet (a
        trial that ends on its own between rungs still counts); decide nothing."""
        time = (result or {}).get(self._time_attr)
        if not isinstance(time, (int, float)) or time >= self._max_t:
            return
        rung = self._rung_to_record(trial.trial_id, time)
        if rung is not None:
            self.recorded[rung][trial.trial_id] = self._vector(result)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        """Nothing to forget: a removed trial's records still count at their rungs."""

    def debug_string(self) -> str:
        objectives = ", ".join(f"{key} {mode}" for key, mode in self._objectives)
        rungs = " | ".join(
            f"rung {rung:g}: {len(self.recorded[rung])} recorded, {self.stopped_at[rung]} stopped" for rung in self.rungs
        )
        return f"Using MultiObjectiveASHA ({objectives}): {rungs or 'no rungs below max_t'}"

    def get_state(self) -> dict[str, Any]:
        """A copy of everything the scheduler has recorded (its rungs' vectors and counts)."""
        return copy.deepcopy(self.__dict__)

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(copy.deepcopy(state))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))

    def _rung_to_record(self, trial_id: str, time: float) -> float | None:
        """The highest rung at or below ``time``, unless the trial is recorded there already."""
        reached = [rung for rung in self.rungs if rung <= time]
        if not reached or trial_id in self.recorded[reached[-1]]:
            return None
        return reached[-1]

    def _vector(self, result: dict) -> Vector | None:
        """The result's objectives in minimization form, or None if one is not a finite number."""
        if objective_problem(result, [key for key, _ in self._objectives]):
            return None
        return tuple(-float(result[key]) if mode == "max" else float(result[key]) for key, mode in self._objectives)

    def _decide(self, rung: float, trial_id: str) -> str:
        """The promotion rule (class docstring) for ``trial_id``, just recorded at ``rung``."""
        recorded = self.recorded[rung]
        n = len(recorded)
        if recorded[trial_id] is None:
            return TrialScheduler.CONTINUE if n == 1 else TrialScheduler.STOP
        if n < self._reduction_factor:
            return TrialScheduler.CONTINUE
        keep = max(1, math.floor(n / self._reduction_factor))
        ids = list(recorded)
        best = promotion_order(list(recorded.values()))[:keep]
        return TrialScheduler.CONTINUE if ids.index(trial_id) in best else TrialScheduler.STOP


def _validate(objectives: list[tuple[str, str]], grace_period: float, reduction_factor: float, max_t: float) -> None:
    """Raise ValueError naming the first bad argument, its value and what is allowed."""
    if not objectives:
        raise ValueError("objectives is empty; give at least one (result key, 'max' | 'min') pair")
    for key, mode in objectives:
        if mode not in ("max", "min"):
            raise ValueError(f"objectives: mode of {key!r} is {mode!r}; allowed: 'max', 'min'")
    if not grace_period > 0:
        raise ValueError(f"grace_period is {grace_period!r}; it must be > 0")
    if not reduction_factor > 1:
        raise ValueError(f"reduction_factor is {reduction_factor!r}; it must be > 1")
    if not max_t >= grace_period:
        raise ValueError(f"max_t is {max_t!r}; it must be >= grace_period ({grace_period!r})")
