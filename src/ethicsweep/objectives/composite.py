"""The training objective: task loss, weighted penalty terms, and constrained terms.

Penalty terms add ``weight · value``. A constrained term asks ``value <= bound``; it
enters the Lagrangian as ``λ · (value − bound)`` with a multiplier λ ≥ 0 that cooper
updates by projected gradient ascent: λ grows while the constraint is violated and shrinks
(to 0) once it holds. When a term has an exact counterpart (a hard rate gap), the
multiplier is updated from that one, the model from the soft one (a proxy-Lagrangian).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cooper
import torch
import torch.nn.functional as F
from torch import nn

from ethicsweep.objectives.base import RESERVED_NAMES, Batch, Term, TermContext, TermSpecBase

TASK = RESERVED_NAMES[0]


class NonFiniteLoss(ArithmeticError):
    """The loss of a minibatch is NaN or infinite; training cannot go on."""


class BinaryCrossEntropy(Term):
    """The task loss: mean binary cross-entropy of the logits."""

    def forward(self, batch: Batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(batch.logits, batch.y)


@dataclass(frozen=True)
class Slot:
    """How one term enters the loss."""

    name: str
    mode: str  # "penalty" or "constraint"
    weight: float = 1.0
    bound: float = 0.0
    dual_lr: float = 0.05


class Objective(nn.Module):
    """Binary cross-entropy plus terms, each in a slot (penalty or constraint)."""

    def __init__(self, terms: Sequence[tuple[Slot, Term]]):
        super().__init__()
        self.task = BinaryCrossEntropy()
        self.slots = [slot for slot, _ in terms]
        self.terms = nn.ModuleDict({slot.name: term for slot, term in terms})

    @classmethod
    def from_specs(cls, specs: Sequence[TermSpecBase], context: TermContext) -> Objective:
        return cls([(Slot(s.key, s.mode, s.weight, s.bound or 0.0, s.dual_lr), s.build(context)) for s in specs])

    @property
    def constraints(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.mode == "constraint"]

    def parts(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Unweighted value of the task loss (``bce``) and of every term."""
        return {TASK: self.task(batch), **{slot.name: self.terms[slot.name](batch) for slot in self.slots}}

    def penalized(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """Task loss plus the weighted penalty terms (constraints not included)."""
        total = parts[TASK]
        for slot in self.slots:
            if slot.mode == "penalty":
                total = total + slot.weight * parts[slot.name]
        return total


class ObjectiveProblem(cooper.ConstrainedMinimizationProblem):
    """The objective as a cooper constrained minimization problem (one multiplier per
    constrained term; without constraints it is a plain minimization)."""

    def __init__(self, objective: Objective, device: torch.device | str = "cpu"):
        super().__init__()
        self.objective = objective
        for slot in objective.constraints:
            multiplier = cooper.multipliers.DenseMultiplier(num_constraints=1, device=torch.device(device))
            setattr(self, f"constraint_{slot.name}", cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=multiplier))

    def constraint(self, slot: Slot) -> cooper.Constraint:
        return getattr(self, f"constraint_{slot.name}")

    def compute_cmp_state(self, make_batch: Callable[[], Batch]) -> cooper.CMPState:
        batch = make_batch()
        parts = self.objective.parts(batch)
        bad = [name for name, value in parts.items() if not torch.isfinite(value)]
        if bad:
            raise NonFiniteLoss(f"{bad[0]} is {parts[bad[0]].item()}")
        loss = self.objective.penalized(parts)
        observed = {}
        for slot in self.objective.constraints:
            violation = (parts[slot.name] - slot.bound).reshape(1)
            hard = self.objective.terms[slot.name].hard_value(batch)
            strict = None if hard is None else (hard.detach() - slot.bound).reshape(1)
            observed[self.constraint(slot)] = cooper.ConstraintState(violation=violation, strict_violation=strict)
        return cooper.CMPState(loss=loss, observed_constraints=observed, misc={"parts": parts})

    def multiplier_values(self) -> dict[str, float]:
        """λ of each constrained term, by term name."""
        return {slot.name: float(self.constraint(slot).multiplier.weight.detach()[0]) for slot in self.objective.constraints}

    def optimizer(self, primal: torch.optim.Optimizer) -> cooper.optim.CooperOptimizer:
        """Simultaneous primal-descent / dual-ascent when there are constraints, else plain."""
        if not self.objective.constraints:
            return cooper.optim.UnconstrainedOptimizer(self, primal_optimizers=primal)
        groups = [{"params": list(self.constraint(s).multiplier.parameters()), "lr": s.dual_lr} for s in self.objective.constraints]
        dual = torch.optim.SGD(groups, lr=groups[0]["lr"], maximize=True)
        return cooper.optim.SimultaneousOptimizer(self, primal_optimizers=primal, dual_optimizers=dual)


def gradient_shares(objective: Objective, problem: ObjectiveProblem, batch: Batch, parameters: Sequence[torch.Tensor]) -> dict[str, float]:
    """Each part's share of the summed gradient norms on one batch.

    A part's gradient is that of its contribution to the Lagrangian: the task loss,
    ``weight · value`` for a penalty, ``λ · value`` for a constraint. Shares sum to 1
    (all 0 when every gradient vanishes).
    """
    parts = objective.parts(batch)
    multipliers = problem.multiplier_values()
    scale = {slot.name: (slot.weight if slot.mode == "penalty" else multipliers[slot.name]) for slot in objective.slots}
    norms = {}
    params = [p for p in parameters if p.requires_grad]
    for name, value in parts.items():
        factor = scale.get(name, 1.0)
        if factor == 0 or not value.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(factor * value, params, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads if g is not None)))
    total = sum(norms.values())
    return {name: (norm / total if total > 0 else 0.0) for name, norm in norms.items()}
