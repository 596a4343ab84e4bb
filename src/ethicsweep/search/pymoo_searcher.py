"""A Ray Tune searcher driven by a pymoo evolutionary algorithm through ask-and-tell.

Each searched parameter is one real variable in [0, 1] of pymoo's problem, decoded into
the parameter's value (``decode``). A generation, pymoo's ``ask()`` population, is a batch
of concurrent trials: ``suggest()`` hands its individuals out one by one, then returns None
until every result of the generation is in; the generation is then told to pymoo and the
next one asked for.

Objectives are told as minimized values ("max" ones negated); each constraint
``(result key, "<=" | ">=", bound)`` is one of pymoo's inequality constraints G ≤ 0. A
trial that errors, reports no result, or reports a missing, NaN or infinite objective or
constrained metric never leaves its generation waiting: its reason is kept in
``fail_reasons`` and it is told as infeasible (a constraint violation of
``FAILED_VIOLATION``) with the worst finite objective values told so far, never NaN.

Ray pickles its searcher. pymoo decorates some module-level functions (tournament
comparisons) with closures that ``pickle`` cannot name, so the algorithm and its pending
generation are pickled by a pickler that refers to those functions by module and name.
"""

from __future__ import annotations

import importlib
import inspect
import io
import math
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.algorithms.moo.sms import SMSEMOA
from pymoo.config import Config
from pymoo.core.algorithm import Algorithm
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem
from pymoo.util.ref_dirs import get_reference_directions
from ray.tune.search import Searcher

from ethicsweep.search.optuna_searcher import objective_problem
from ethicsweep.spec import Parameter

Config.warnings["not_compiled"] = False  # pymoo's pure-Python fallback is what runs here

ALGORITHMS = ("nsga2", "nsga3", "smsemoa", "agemoea")
FAILED_VIOLATION = 1e9  # constraint violation told for a failed trial: far above any real one


def decode_value(parameter: Parameter, u: float) -> Any:
    """The value of ``parameter`` that the unit variable ``u`` stands for.

    ``u`` is clipped into [0, 1]. float: ``low + u (high - low)``, or the same on the log
    scale when ``log``; int: that value rounded half up and clipped into [low, high];
    categorical: ``choices[floor(u k)]`` with k choices, u = 1 giving the last choice.
    """
    u = min(max(float(u), 0.0), 1.0)
    if parameter.type == "categorical":
        choices = parameter.choices or []
        return choices[min(math.floor(u * len(choices)), len(choices) - 1)]
    low, high = float(parameter.low), float(parameter.high)
    if parameter.log:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    if parameter.type == "int":
        return int(min(max(math.floor(value + 0.5), low), high))
    return min(max(value, low), high)


def decode(space: dict[str, Parameter], x: Sequence[float]) -> dict[str, Any]:
    """The flat configuration ``{dotted path: value}`` for the unit vector ``x``, whose
    i-th entry is the i-th parameter of ``space`` in its order."""
    if len(x) != len(space):
        raise ValueError(f"{len(x)} variables for a space of {len(space)} parameters")
    return {path: decode_value(parameter, u) for (path, parameter), u in zip(space.items(), x)}


def reference_directions(n_obj: int, n_points: int, seed: int) -> np.ndarray:
    """``n_points`` reference directions for NSGA-III on the unit simplex in ``n_obj``
    dimensions: Das-Dennis when some number of partitions gives exactly ``n_points``
    (always so for two objectives), else Riesz-energy ones (seeded; about a second)."""
    partitions, count = 1, n_obj
    while count < n_points:
        partitions += 1
        count = math.comb(partitions + n_obj - 1, n_obj - 1)
    if count == n_points:
        return get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
    return get_reference_directions("energy", n_obj, n_points, seed=seed)


def build_algorithm(name: str, n_obj: int, population_size: int, seed: int) -> Algorithm:
    """A fresh pymoo algorithm (not yet set up) for ``n_obj`` objectives."""
    if name == "nsga2":
        return NSGA2(pop_size=population_size, seed=seed)
    if name == "nsga3":
        return NSGA3(ref_dirs=reference_directions(n_obj, population_size, seed), pop_size=population_size, seed=seed)
    if name == "smsemoa":
        return SMSEMOA(pop_size=population_size, seed=seed)
    if name == "agemoea":
        from pymoo.algorithms.moo.age import AGEMOEA  # imported here: it loads numba (about a second)

        return AGEMOEA(pop_size=population_size, seed=seed)
    raise ValueError(f"unknown algorithm {name!r}; allowed: {', '.join(ALGORITHMS)}")


class _UnitCube(Problem):
    """pymoo's view of the search: ``n_var`` variables in [0, 1], values told from outside."""

    def __init__(self, n_var: int, n_obj: int, n_ieq_constr: int):
        super().__init__(n_var=n_var, n_obj=n_obj, n_ieq_constr=n_ieq_constr, xl=0.0, xu=1.0)


def _unnamed_functions() -> dict[int, tuple[Any, str, str]]:
    """Module-level functions of the loaded pymoo modules that ``pickle`` cannot name
    (decorator closures), by id: ``(function, module name, attribute)``."""
    found = {}
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("pymoo") and module is not None:
            for attribute, value in list(vars(module).items()):
                if inspect.isfunction(value) and "<locals>" in value.__qualname__:
                    found[id(value)] = (value, module_name, attribute)
    return found


class _PymooPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._unnamed = _unnamed_functions()

    def persistent_id(self, obj: Any) -> tuple[str, str] | None:
        entry = self._unnamed.get(id(obj))
        return (entry[1], entry[2]) if entry is not None and entry[0] is obj else None


class _PymooUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: tuple[str, str]) -> Any:
        module_name, attribute = pid
        return getattr(importlib.import_module(module_name), attribute)


def dumps_pymoo(obj: Any) -> bytes:
    """``obj`` (pymoo algorithms, populations...) pickled; ``loads_pymoo`` reads it back."""
    buffer = io.BytesIO()
    _PymooPickler(buffer).dump(obj)
    return buffer.getvalue()


def loads_pymoo(data: bytes) -> Any:
    return _PymooUnpickler(io.BytesIO(data)).load()


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check(
    space: dict[str, Parameter],
    objectives: list[tuple[str, str]],
    algorithm: str,
    population_size: int,
    constraints: Sequence[tuple[str, str, float]],
) -> None:
    """Refuse a searcher that cannot run, naming the bad argument and what is allowed."""
    if not space:
        raise ValueError("space: at least one parameter is needed")
    if len(objectives) < 2:
        raise ValueError(f"objectives: pymoo's algorithms here are multi-objective; got {len(objectives)}, need 2 or more")
    for key, mode in objectives:
        if mode not in ("max", "min"):
            raise ValueError(f"objectives: {key} has mode {mode!r}; allowed: max, min")
    for key, op, bound in constraints:
        if op not in ("<=", ">=") or not _finite(bound):
            raise ValueError(f"constraints: ({key!r}, {op!r}, {bound!r}) needs '<=' or '>=' and a finite bound")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown {algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    if population_size < max(2, len(objectives)):
        raise ValueError(f"population_size: {population_size} is too small; need at least {max(2, len(objectives))}")


class PymooSearcher(Searcher):
    """Suggests flat configurations ``{dotted path: value}`` from a pymoo algorithm.

    ``objectives`` lists ``(result key, "max" | "min")`` pairs; ``constraints`` lists
    ``(result key, "<=" | ">=", bound)``: a trial that breaks one is infeasible, not failed.
    ``algorithm`` is one of ``ALGORITHMS``; ``population_size`` individuals (trials) make a
    generation, and for "nsga3" as many reference directions. The result reported with a
    trial's last epoch is what the algorithm is told. When pymoo can make no new individual
    (every offspring a duplicate), ``suggest`` returns ``Searcher.FINISHED``.
    """

    def __init__(
        self,
        space: dict[str, Parameter],
        objectives: list[tuple[str, str]],
        algorithm: str,
        seed: int,
        population_size: int,
        constraints: Sequence[tuple[str, str, float]] = (),
    ):
        _check(space, objectives, algorithm, population_size, constraints)
        super().__init__(metric=[k for k, _ in objectives], mode=[m for _, m in objectives])
        self._space = dict(space)
        self._objectives = list(objectives)
        self._constraints = [(key, op, float(bound)) for key, op, bound in constraints]
        self._algorithm = build_algorithm(algorithm, len(objectives), population_size, seed)
        self._algorithm.setup(_UnitCube(len(space), len(objectives), len(self._constraints) + 1), termination=NoTermination())
        self._generation: Population | None = None  # asked for, not yet told
        self._handed = 0  # individuals of the generation handed out
        self._slots: dict[str, int] = {}  # trial id -> its individual in the generation
        self._told: dict[int, tuple[list[float] | None, list[float]]] = {}  # slot -> (F or None if failed, G)
        self._worst: list[float] | None = None  # per objective, the largest minimized value told
        self._configs: dict[str, dict[str, Any]] = {}
        self.fail_reasons: dict[str, str] = {}

    @property
    def algorithm(self) -> Algorithm:
        """The pymoo algorithm; ``algorithm.off`` is the last generation told, with F, G, CV."""
        return self._algorithm

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # objectives and space are this searcher's own

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self._configs:  # Ray re-asks after a restore
            return dict(self._configs[trial_id])
        if self._generation is None:
            self._generation = self._algorithm.ask()
            if self._generation is None or len(self._generation) == 0:
                self._generation = None
                return Searcher.FINISHED
        if self._handed == len(self._generation):
            return None  # the generation is out; wait for its results
        slot = self._handed
        self._handed += 1
        self._slots[trial_id] = slot
        self._configs[trial_id] = decode(self._space, self._generation[slot].X)
        return dict(self._configs[trial_id])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        slot = self._slots.get(trial_id)
        if slot is None or slot in self._told:
            return
        reason = "the trial raised an error" if error else self._problem(result)
        if reason:
            self.fail_reasons[trial_id] = reason
            self._told[slot] = (None, [0.0] * len(self._constraints) + [FAILED_VIOLATION])
        else:
            self._told[slot] = (self._minimized(result), self._violations(result) + [0.0])
        if len(self._told) == len(self._generation):
            self._tell()

    def _problem(self, result: dict | None) -> str | None:
        """Why ``result`` cannot be told: see ``objective_problem``; also a constrained
        metric that is missing or not finite."""
        problem = objective_problem(result, [k for k, _ in self._objectives])
        if problem:
            return problem
        for key, _, _ in self._constraints:
            if not _finite(result.get(key)):
                return f"constrained metric {key} is {result.get(key)!r}, not a finite number"
        return None

    def _minimized(self, result: dict) -> list[float]:
        return [float(result[k]) if mode == "min" else -float(result[k]) for k, mode in self._objectives]

    def _violations(self, result: dict) -> list[float]:
        """pymoo's G per constraint: positive by how much it is broken, ≤ 0 when it holds."""
        return [float(result[k]) - bound if op == "<=" else bound - float(result[k]) for k, op, bound in self._constraints]

    def _tell(self) -> None:
        """Tell the complete generation (failed trials at the worst values told) and clear it."""
        rows = [self._told[slot] for slot in range(len(self._generation))]
        finite = [f for f, _ in rows if f is not None]
        if finite:
            known = np.array(finite + ([self._worst] if self._worst else []))
            self._worst = known.max(axis=0).tolist()
        worst = self._worst or [0.0] * len(self._objectives)
        F = np.array([worst if f is None else f for f, _ in rows], dtype=float)
        G = np.array([g for _, g in rows], dtype=float)
        Evaluator().eval(StaticProblem(self._algorithm.problem, F=F, G=G), self._generation)
        self._algorithm.tell(infills=self._generation)
        self._generation, self._handed, self._slots, self._told = None, 0, {}, {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pymoo"] = dumps_pymoo((state.pop("_algorithm"), state.pop("_generation")))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["_algorithm"], state["_generation"] = loads_pymoo(state.pop("_pymoo"))
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__setstate__(pickle.load(handle))

