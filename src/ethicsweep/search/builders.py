"""Build what a spec's ``search`` block asks for: the searcher (Optuna or pymoo) and the
early-stopping scheduler. Objectives and constraints read validation metrics (``val/*``)."""

from __future__ import annotations

from ray.tune.search import Searcher

from ethicsweep.search.mo_asha import MultiObjectiveASHA
from ethicsweep.search.optuna_searcher import OptunaSearcher, SamplerSpec
from ethicsweep.search.pymoo_searcher import PymooSearcher
from ethicsweep.search.space import to_distributions
from ethicsweep.spec import PYMOO_SEARCHERS, SweepSpec


def objective_keys(spec: SweepSpec) -> list[tuple[str, str]]:
    """``(result key, mode)`` of each objective, e.g. ``("val/accuracy", "max")``."""
    return [(f"val/{o.metric}", o.mode) for o in spec.search.objectives]


def build_searcher(spec: SweepSpec) -> Searcher:
    """The searcher ``spec.search.searcher`` names, seeded with the sweep's seed, with the
    spec's constraints and (Optuna) its warm-start configurations."""
    search = spec.search
    if search.searcher in PYMOO_SEARCHERS:
        ops = {"<=": ["<="], "<": ["<="], ">=": [">="], ">": [">="], "==": ["<=", ">="]}
        constraints = [(rule.key, op, rule.bound) for rule in search.rules for op in ops[rule.op]]
        return PymooSearcher(search.space, objective_keys(spec), search.searcher.removeprefix("pymoo-"), spec.seed,
                             search.population_size, constraints)  # fmt: skip
    sampler = SamplerSpec(search.searcher, spec.seed, search.population_size)
    return OptunaSearcher(to_distributions(search.space), objective_keys(spec), sampler, constraints=search.rules, initial=search.initial)


def build_scheduler(spec: SweepSpec) -> MultiObjectiveASHA | None:
    """Multi-objective ASHA over the objectives (rungs in epochs), or None (no early stopping)."""
    scheduler = spec.search.scheduler
    if scheduler.kind == "none":
        return None
    return MultiObjectiveASHA(objective_keys(spec), time_attr="epoch", grace_period=scheduler.grace_period,
                              reduction_factor=scheduler.reduction_factor, max_t=spec.max_epochs)  # fmt: skip
