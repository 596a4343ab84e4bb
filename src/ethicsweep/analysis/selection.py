"""Choosing the model to deploy from a registered front, by stated rules.

Rules (``--where``) are parsed by the grammar of :mod:`ethicsweep.rules`, never evaluated
as code. A candidate meets a rule when its recorded value satisfies it (NaN never does). Among the
candidates that meet every rule, one is chosen:

- ``prefer``: the best value of one metric in its natural direction (ties: the lower
  candidate number);
- ``knee``: the smallest sum of normalized objectives, i.e. the candidate farthest below
  the hyperplane through the objective-wise extremes of the normalized front;
- ``asf``: the smallest achievement scalarization max_i w_i · f̂_i (pymoo's ASF with
  direction 1/w): the candidate nearest the ideal point in the weighted Chebyshev sense;
- ``pseudo-weights``: the candidate whose pseudo-weights (its normalized distance from the
  worst value of each objective, summed to 1) are nearest the stated weights in L1 (pymoo's
  ``PseudoWeights``).

Normalization is over the candidates that meet the rules, with every objective turned into
one to minimize: f̂ = (f − ideal) / (nadir − ideal), 0 where all candidates tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pymoo.decomposition.asf import ASF
from pymoo.mcdm.pseudo_weights import PseudoWeights

from ethicsweep.objectives.metrics import METRIC_DIRECTIONS
from ethicsweep.rules import SPLITS, Rule, RuleError, metric_key

__all__ = ["METHODS", "SPLITS", "Candidate", "Rule", "SelectionError", "Selection", "metric_key", "parse_weights", "select"]

METHODS = ("prefer", "knee", "asf", "pseudo-weights")
Method = Literal["prefer", "knee", "asf", "pseudo-weights"]

SelectionError = RuleError  # one error for rules, metrics, methods and weights


@dataclass(frozen=True)
class Candidate:
    """A registered front model: its version, candidate number and recorded metrics."""

    version: str
    number: int
    metrics: dict[str, float]

    def value(self, key: str) -> float:
        return self.metrics.get(key, math.nan)


@dataclass(frozen=True)
class Selection:
    """The outcome: the chosen candidate (None when no candidate meets every rule), and for
    every candidate why it was or was not chosen."""

    chosen: Candidate | None
    reasons: dict[str, str]
    closest: list[Candidate] = field(default_factory=list)


def parse_weights(text: str | None, objectives: list[tuple[str, str]]) -> np.ndarray:
    """Weights for the objectives from ``name=w,...`` or ``w,...`` (in objective order);
    equal weights when ``text`` is None. Normalized to sum 1."""
    names = [m for m, _ in objectives]
    if text is None:
        return np.full(len(names), 1 / len(names))
    items = [item.strip() for item in text.split(",")]
    try:
        if all("=" in item for item in items):
            given = {k.strip(): float(v) for k, v in (item.split("=", 1) for item in items)}
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise SelectionError(f"--weights: {unknown[0]!r} is not an objective of this sweep; objectives: {', '.join(names)}")
            missing = [n for n in names if n not in given]
            if missing:
                raise SelectionError(f"--weights {text!r}: give a weight for every objective ({', '.join(names)}); missing: {', '.join(missing)} (0 is allowed)")
            weights = np.array([given[n] for n in names])
        else:
            weights = np.array([float(item) for item in items])
    except ValueError:
        raise SelectionError(f"--weights {text!r}: write numbers, e.g. '{','.join(f'{n}=0.5' for n in names)}'") from None
    if len(weights) != len(names) or not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
        raise SelectionError(
            f"--weights {text!r}: give {len(names)} non-negative finite weights with a positive sum, one per objective ({', '.join(names)})"
        )
    return weights / weights.sum()


def _normalized(candidates: list[Candidate], objectives: list[tuple[str, str]], split: str) -> np.ndarray:
    """Objective values turned to minimize, then scaled to [0, 1] over ``candidates``."""
    F = np.array([[c.value(f"{split}/{m}") * (-1 if d == "max" else 1) for m, d in objectives] for c in candidates])
    ideal, nadir = F.min(axis=0), F.max(axis=0)
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    return (F - ideal) / span


def select(
    candidates: list[Candidate],
    rules: list[Rule],
    objectives: list[tuple[str, str]],
    method: Method = "prefer",
    prefer: str | None = None,
    weights: np.ndarray | None = None,
    split: str = "test",
) -> Selection:
    """Apply ``rules``, then ``method``, to ``candidates`` (see the module docstring).

    ``objectives``: (metric, direction) pairs of the sweep; ``prefer``: a metric key
    (``split/name``) for ``method="prefer"``; ``weights``: per objective, summing to 1
    (equal when None)."""
    broken = {c.version: [r for r in rules if not r.holds(c.value(r.key))] for c in candidates}
    feasible = [c for c in candidates if not broken[c.version]]
    reasons = {
        c.version: "breaks " + "; ".join(f"{r} ({r.key} = {c.value(r.key):.4g})" for r in broken[c.version])
        for c in candidates
        if broken[c.version]
    }
    if not feasible:
        def distance(c: Candidate) -> tuple[int, float]:
            return len(broken[c.version]), sum(r.shortfall(c.value(r.key)) for r in rules)

        return Selection(None, reasons, sorted(candidates, key=lambda c: (*distance(c), c.number))[:3])
    weights = np.full(len(objectives), 1 / len(objectives)) if weights is None else np.asarray(weights, dtype=float)
    if any(math.isnan(c.value(f"{split}/{m}")) for c in feasible for m, _ in objectives) and method != "prefer":
        undefined = next(f"{split}/{m}" for c in feasible for m, _ in objectives if math.isnan(c.value(f"{split}/{m}")))
        raise SelectionError(f"--method {method}: {undefined} is undefined (NaN) for a candidate; add a rule that excludes it or use --prefer")
    if method == "prefer":
        key = prefer or f"{split}/{objectives[0][0]}"
        sign = -1.0 if METRIC_DIRECTIONS[key.split("/")[1]] == "max" else 1.0
        scores = np.array([sign * c.value(key) if not math.isnan(c.value(key)) else math.inf for c in feasible])
        label = lambda s: f"{key} = {sign * s:.4g}"  # noqa: E731
    else:
        F = _normalized(feasible, objectives, split)
        if method == "knee":
            scores = F.sum(axis=1)
            label = lambda s: f"sum of normalized objectives {s:.4f}"  # noqa: E731
        elif method == "asf":
            scores = ASF().do(F, 1 / np.maximum(weights, 1e-12), utopian_point=np.zeros(F.shape[1]))
            label = lambda s: f"ASF {s:.4f}"  # noqa: E731
        else:
            m = F.shape[1]
            _, pseudo = PseudoWeights(weights, ideal=np.zeros(m), nadir=np.ones(m)).do(F, return_pseudo_weights=True)
            scores = np.nan_to_num(np.abs(pseudo - weights).sum(axis=1), nan=math.inf)  # NaN: worst on every objective
            label = lambda s: f"pseudo-weights {s:.4f} from the stated weights (L1)"  # noqa: E731
    order = sorted(range(len(feasible)), key=lambda i: (scores[i], feasible[i].number))
    best = feasible[order[0]]
    reasons[best.version] = f"chosen: {label(scores[order[0]])}"
    for i in order[1:]:
        relation = "ties with the chosen (the lower candidate number wins)" if scores[i] == scores[order[0]] else "worse than the chosen"
        reasons[feasible[i].version] = f"{label(scores[i])}, {relation}"
    return Selection(best, reasons)
