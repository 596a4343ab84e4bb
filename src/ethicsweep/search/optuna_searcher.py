"""A Ray Tune searcher driven by an Optuna multi-objective sampler (NSGA-II, NSGA-III,
TPE, Gaussian process, random), with constraints and a warm start.

Ray pickles its searcher (in ``tuner.pkl`` and the experiment checkpoint), but Optuna's
NSGAIISampler and any study holding it carry a thread lock and cannot be pickled. So this
searcher keeps a picklable *description* of its sampler and builds sampler and study where
they are used; its pickled state holds the study's finished trials, from which the study
is rebuilt on restore.

A trial that errors, reports no value, or reports NaN/∞ for an objective is told to Optuna
as FAIL (the reason is kept in ``fail_reasons``): it never stays RUNNING. A trial that
breaks a constraint is told with its values and its constraint values (≤ 0: holds), which
the sampler uses to prefer feasible trials; a NaN constraint metric counts as broken (∞).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from ray.tune.search import Searcher

from ethicsweep.rules import Rule
from ethicsweep.trainables.tune import STOPPED_KEY

optuna.logging.set_verbosity(optuna.logging.WARNING)


CONSTRAINTS_ATTR = "ethicsweep.constraints"


def constraint_values(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Optuna's ``constraints_func``: the values stored on the trial before it was told
    (≤ 0: the constraint holds). Module-level, so a sampler that holds it still pickles."""
    return list(trial.user_attrs.get(CONSTRAINTS_ATTR, []))


@dataclass(frozen=True)
class SamplerSpec:
    """What Optuna sampler to build, seeded: ``nsga2``, ``nsga3`` (NSGAIISampler and
    NSGAIIISampler, ``population_size`` per generation), ``tpe`` (multi-objective TPE),
    ``gp`` (Gaussian-process Bayesian optimization) or ``random``. ``constrained``: give
    the sampler the trials' constraint values (all but ``random``, which ignores them)."""

    name: str
    seed: int
    population_size: int = 8
    constrained: bool = False

    def build(self, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler. ``resumed_at``: trials the study already holds when it is rebuilt on
        restore. The sampler's random state is not saved, so a rebuilt one seeded as at the
        start would suggest the first trials again; it is seeded from (seed, resumed_at)
        instead, which repeats nothing and stays deterministic."""
        constraints = {"constraints_func": constraint_values} if self.constrained else {}
        seed = self.seed if not resumed_at else int(np.random.SeedSequence([self.seed, resumed_at]).generate_state(1)[0])
        if self.name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=seed, **constraints)
        if self.name == "nsga3":
            return optuna.samplers.NSGAIIISampler(population_size=self.population_size, seed=seed, **constraints)
        if self.name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **constraints)
        if self.name == "gp":
            return optuna.samplers.GPSampler(seed=seed, **constraints)
        if self.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        raise ValueError(f"unknown sampler {self.name!r}; allowed: nsga2, nsga3, tpe, gp, random")


def objective_problem(result: dict | None, keys: list[str]) -> str | None:
    """Why ``result`` cannot be told to a searcher (no result, or an objective that is
    missing, NaN or infinite), or None when every objective is a finite number."""
    if not result:
        return "the trial reported no result"
    if result.get(STOPPED_KEY):
        return f"training stopped: {result[STOPPED_KEY]}"
    for key in keys:
        value = result.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"objective {key} is {value!r}, not a finite number"
    return None


class OptunaSearcher(Searcher):
    """Suggests flat configurations ``{dotted path: value}`` from an Optuna study.

    ``objectives`` lists ``(result key, "max" | "min")`` pairs; the result reported with
    the trial's last epoch is what the study is told.
    """

    def __init__(
        self,
        space: dict[str, BaseDistribution],
        objectives: list[tuple[str, str]],
        sampler: SamplerSpec,
        constraints: list[Rule] | None = None,
        initial: list[dict[str, Any]] | None = None,
    ):
        super().__init__(metric=[k for k, _ in objectives], mode=[m for _, m in objectives])
        self._space = space
        self._objectives = list(objectives)
        self._constraints = list(constraints or [])
        self._sampler_spec = replace(sampler, constrained=bool(self._constraints))
        self._initial = [dict(config) for config in initial or []]
        self._numbers: dict[str, int] = {}
        self.fail_reasons: dict[str, str] = {}
        self._saved_trials: list[optuna.trial.FrozenTrial] = []
        self._study: optuna.Study | None = None

    @property
    def study(self) -> optuna.Study:
        """The Optuna study, built (and refilled from saved trials) on first use. A new
        study queues the ``initial`` configurations first (warm start)."""
        if self._study is None:
            directions = ["maximize" if mode == "max" else "minimize" for _, mode in self._objectives]
            self._study = optuna.create_study(directions=directions, sampler=self._sampler_spec.build(len(self._saved_trials)))
            self._study.add_trials(self._saved_trials)
            if not self._saved_trials:
                for config in self._initial:
                    self._study.enqueue_trial(config, skip_if_exists=True)
        return self._study

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # objectives and space are this searcher's own

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self._numbers:  # Ray re-asks after a restore
            return dict(self.study.get_trials(deepcopy=False)[self._numbers[trial_id]].params)
        trial = self.study.ask(fixed_distributions=self._space)
        self._numbers[trial_id] = trial.number
        return dict(trial.params)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self._numbers.get(trial_id)
        if number is None or self.study.get_trials(deepcopy=False)[number].state.is_finished():
            return
        reason = "the trial raised an error" if error else objective_problem(result, [k for k, _ in self._objectives])
        if reason:
            self.fail_reasons[trial_id] = reason
            self.study.tell(number, state=TrialState.FAIL)
            return
        if self._constraints:
            values = [rule.violation(float(result.get(rule.key, math.nan))) for rule in self._constraints]
            frozen = self.study.get_trials(deepcopy=False)[number]
            self.study._storage.set_trial_user_attr(frozen._trial_id, CONSTRAINTS_ATTR, values)
        self.study.tell(number, [float(result[key]) for key, _ in self._objectives])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._study is not None:
            state["_saved_trials"] = self._study.get_trials(deepcopy=True)
        state["_study"] = None
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
