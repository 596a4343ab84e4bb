"""Rules on metrics — ``dp_gap <= 0.05`` — parsed by a small grammar, never evaluated as code.

Used by ``select --where`` (on recorded test or validation metrics) and by a sweep's
``search.constraints`` (on validation metrics, during the search)::

    rule   := metric op number
    metric := [split "/"] name        split: val | test; name: a known metric
    op     := "<=" | "<" | ">=" | ">" | "=="
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ethicsweep.errors import EthicsweepError
from ethicsweep.objectives.metrics import METRIC_DIRECTIONS

SPLITS = ("val", "test")
_OPS = {"<=": np.less_equal, "<": np.less, ">=": np.greater_equal, ">": np.greater, "==": np.equal}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RULE = re.compile(rf"^\s*(?P<metric>[A-Za-z0-9_/]+)\s*(?P<op><=|>=|==|<|>)\s*(?P<bound>{_NUMBER})\s*$")


class RuleError(EthicsweepError):
    """A rule or metric name that cannot be used."""


def metric_key(text: str, split: str, where: str) -> str:
    """``split/name`` from ``name`` or ``split/name``; RuleError for anything else."""
    parts = text.split("/")
    name = parts[-1]
    chosen = parts[0] if len(parts) == 2 else split
    if len(parts) > 2 or chosen not in SPLITS or name not in METRIC_DIRECTIONS:
        raise RuleError(
            f"{where}: unknown metric {text!r}; use a metric name, optionally as val/<name> or test/<name>: "
            f"{', '.join(METRIC_DIRECTIONS)}"
        )
    return f"{chosen}/{name}"


@dataclass(frozen=True)
class Rule:
    """``key op bound`` on a metric (``key`` like ``test/dp_gap``)."""

    key: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str, split: str = "test", where: str = "--where") -> Rule:
        """Parse ``text``; a bare metric name reads ``split``. ``where`` names the option or
        field in error messages."""
        match = _RULE.match(text) if isinstance(text, str) else None
        if not match:
            raise RuleError(
                f"{where} {text!r}: not a rule; write METRIC OP NUMBER, e.g. 'dp_gap <= 0.05', with OP one of <=, <, >=, >, =="
            )
        key = metric_key(match["metric"], split, f"{where} {text!r}")
        bound = float(match["bound"])
        if not math.isfinite(bound):
            raise RuleError(f"{where} {text!r}: the bound must be a finite number")
        return cls(key, match["op"], bound)

    @property
    def metric(self) -> str:
        """The metric's name, without its split."""
        return self.key.split("/", 1)[1]

    def holds(self, value: float) -> bool:
        return bool(_OPS[self.op](value, self.bound)) if not math.isnan(value) else False

    def shortfall(self, value: float) -> float:
        """How far ``value`` is from meeting the rule, relative to |bound| (absolute when the
        bound is 0); 0 when it holds, ∞ for NaN."""
        if math.isnan(value):
            return math.inf
        return 0.0 if self.holds(value) else abs(value - self.bound) / (abs(self.bound) or 1.0)

    def violation(self, value: float) -> float:
        """A searcher's constraint value: ≤ 0 when the rule holds, else how far it is broken
        (metric units; ``<`` and ``>`` count as ``<=`` and ``>=``, ``==`` as |value − bound|);
        ∞ for NaN."""
        if math.isnan(value):
            return math.inf
        if self.op == "==":
            return abs(value - self.bound)
        return value - self.bound if self.op in ("<=", "<") else self.bound - value

    def __str__(self) -> str:
        return f"{self.key} {self.op} {self.bound:g}"
