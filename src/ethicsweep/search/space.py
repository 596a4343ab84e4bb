"""The spec's search space as Optuna distributions (keys are dotted config paths)."""

from __future__ import annotations

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ethicsweep.spec import Parameter


def to_distribution(parameter: Parameter) -> BaseDistribution:
    """One spec parameter as an Optuna distribution (bounds inclusive)."""
    if parameter.type == "categorical":
        return CategoricalDistribution(parameter.choices)
    if parameter.type == "int":
        return IntDistribution(int(parameter.low), int(parameter.high), log=parameter.log)
    return FloatDistribution(parameter.low, parameter.high, log=parameter.log)


def to_distributions(space: dict[str, Parameter]) -> dict[str, BaseDistribution]:
    return {path: to_distribution(parameter) for path, parameter in space.items()}
