"""Privacy: the DP-SGD settings (training runs through Opacus), the ε they spend, which
terms DP-SGD can train, and the memorization term.

DP-SGD's guarantee is per example: every example's gradient is clipped to a norm C and
Gaussian noise of standard deviation σ·C is added to their sum. A term whose value on one
row depends on the other rows of the minibatch (a spread of group rates, an adversary
trained on the batch) escapes that clipping, and a constrained term's multiplier is
updated from raw minibatch values: DP-SGD refuses both. The guarantee covers the model's
weights; the per-epoch training diagnostics (mean loss parts, gradient shares) are
computed on raw training batches and are not covered. Sampling and noise come from OS
entropy, never from the spec's (recorded) seed, so a DP-SGD run does not repeat bit for
bit; its ε does. ε comes from Opacus' accountants, subclassed only to compute the same ε
faster.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from opacus import accountants as opacus_accountants
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.analysis.prv import Domain, PoissonSubsampledGaussianPRV
from opacus.accountants.utils import get_noise_multiplier
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ethicsweep.errors import SpecError
from ethicsweep.objectives.base import Batch, Term, TermContext, TermSpecBase
from ethicsweep.objectives.fairness import FairnessSpec
from ethicsweep.objectives.leakage import LeakageAdversarySpec


class PrivacySpec(BaseModel):
    """DP-SGD through Opacus (spec section ``train.privacy``). With ``dp_sgd`` on, give exactly
    one of ``noise_multiplier`` and ``target_epsilon``; both are ignored while it is off."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dp_sgd: bool = Field(False, description="train with per-example clipping and Gaussian noise")
    noise_multiplier: float | None = Field(None, gt=0.0, description="σ: noise standard deviation over the clipping norm")
    target_epsilon: float | None = Field(None, gt=0.0, description="calibrate σ so that the whole run spends at most this ε")
    max_grad_norm: float = Field(1.0, gt=0.0, description="C: every example's gradient is clipped to this L2 norm")
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="δ at which ε is reported (keep it below 1 / training rows)")
    accountant: Literal["prv", "rdp"] = Field("prv", description="Opacus accountant: PRV (tighter) or RDP")

    @model_validator(mode="after")
    def _one_noise_setting(self) -> PrivacySpec:
        given = [name for name in ("noise_multiplier", "target_epsilon") if getattr(self, name) is not None]
        if self.dp_sgd and len(given) != 1:
            which = "both are" if given else "neither is"
            raise ValueError(f"with dp_sgd on, give exactly one of 'noise_multiplier' and 'target_epsilon' ({which} set)")
        return self


@dataclass(frozen=True)
class Schedule:
    """How Opacus runs DP-SGD over ``n`` rows with batch size ``B``: each row joins a batch
    with probability 1/⌈n/B⌉ (Poisson sampling), for ``steps_per_epoch`` steps an epoch, and
    the accountant charges each step at ``sample_rate`` = 1/steps_per_epoch."""

    sample_rate: float
    steps_per_epoch: int


def schedule(n: int, batch_size: int) -> Schedule:
    """The schedule of Opacus' Poisson data loader made from a plain loader of ``n`` rows."""
    sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=1 / math.ceil(n / batch_size))
    return Schedule(sample_rate=1 / len(sampler), steps_per_epoch=len(sampler))


@functools.lru_cache(maxsize=64)
def _calibrated(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    return get_noise_multiplier(
        target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant
    )


def noise_multiplier(privacy: PrivacySpec, plan: Schedule, epochs: int) -> float:
    """σ: the spec's, or the one Opacus calibrates so that ``epochs`` epochs of ``plan``
    spend at most ``target_epsilon`` (within 0.01 below it)."""
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    steps = epochs * plan.steps_per_epoch
    try:
        return _calibrated(privacy.target_epsilon, privacy.delta, plan.sample_rate, steps, privacy.accountant)
    except ValueError as exc:  # Opacus: "The privacy budget is too low." (no σ it tries reaches the target)
        raise SpecError(
            f"privacy.target_epsilon: {privacy.target_epsilon:g} cannot be reached in {epochs} epochs ({steps} steps, "
            f"sampling rate {plan.sample_rate:.4g}) at delta {privacy.delta:g}: {exc} Allowed: a larger target_epsilon "
            "or delta, or fewer epochs"
        ) from None


class RDPAccountant(opacus_accountants.RDPAccountant):
    """Opacus' RDP accountant, its ε unchanged, computing each (σ, q)'s per-step Rényi DP
    (at its default orders) once: Opacus recomputes it at every call."""

    def __init__(self) -> None:
        super().__init__()
        self._per_step: dict[tuple[float, float], np.ndarray] = {}

    def get_privacy_spent(self, *, delta: float, alphas: list[float | int] | None = None) -> tuple[float, float]:
        if alphas is not None or not self.history:
            return super().get_privacy_spent(delta=delta, alphas=alphas)
        rdp = sum([self._step_rdp(sigma, q) * steps for sigma, q, steps in self.history])
        eps, best_alpha = rdp_analysis.get_privacy_spent(orders=self.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
        return float(eps), float(best_alpha)

    def _step_rdp(self, sigma: float, q: float) -> np.ndarray:
        if (sigma, q) not in self._per_step:
            self._per_step[sigma, q] = rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=self.DEFAULT_ALPHAS)
        return self._per_step[sigma, q]

    def epsilon_of(self, history: list[tuple[float, float, int]], delta: float) -> float:
        """ε at ``delta`` of ``history`` (σ, q, steps), with this accountant's per-step cache."""
        self.history = history
        return self.get_epsilon(delta)


class PRVAccountant(opacus_accountants.PRVAccountant):
    """Opacus' PRV accountant, its ε unchanged. Opacus bounds its discretization domain by
    RDP ε's that recompute the per-step RDP at ~150 orders (two thirds of a call's time);
    here they come from an :class:`RDPAccountant`, which computes each (σ, q) once."""

    def __init__(self) -> None:
        super().__init__()
        self._rdp = RDPAccountant()

    def _get_domain(
        self, prvs: list[PoissonSubsampledGaussianPRV], num_self_compositions: list[int], eps_error: float, delta_error: float
    ) -> Domain:
        """Opacus' ``_get_domain`` with ``compute_safe_domain_size`` (remark 5.6 of Gopi et
        al.) written out over the cached RDP ε's."""
        total = sum(num_self_compositions)
        steps = [(prv.noise_multiplier, prv.sample_rate) for prv in prvs]
        bounds = [self._rdp.epsilon_of([(*s, k) for s, k in zip(steps, num_self_compositions)], delta_error / 4)]
        bounds += [self._rdp.epsilon_of([(*s, 1)], delta_error / (8 * total)) for s in steps]
        size = max(max(bounds), eps_error) + 3
        return Domain.create_aligned(-size, size, eps_error / np.sqrt(total * np.log(12 / delta_error) / 2))


ACCOUNTANTS = {"prv": PRVAccountant, "rdp": RDPAccountant}


def create_accountant(mechanism: str) -> opacus_accountants.IAccountant:
    """A fresh accountant of ``mechanism`` (``PrivacySpec.accountant``)."""
    return ACCOUNTANTS[mechanism]()


def epsilon_spent(privacy: PrivacySpec, sigma: float, plan: Schedule, steps: int) -> float:
    """ε at ``privacy.delta`` after ``steps`` DP-SGD steps of ``plan`` with noise ``sigma``."""
    accountant = create_accountant(privacy.accountant)
    accountant.history = [(sigma, plan.sample_rate, steps)]
    return float(accountant.get_epsilon(delta=privacy.delta))


def planned_epsilon(privacy: PrivacySpec, n: int, batch_size: int, epochs: int) -> float:
    """ε of a whole run (``epochs`` epochs over ``n`` rows); ∞ without DP-SGD."""
    if not privacy.dp_sgd:
        return math.inf
    plan = schedule(n, batch_size)
    return epsilon_spent(privacy, noise_multiplier(privacy, plan, epochs), plan, epochs * plan.steps_per_epoch)


#: Term kinds whose loss is a mean of per-example values: DP-SGD can train them.
PER_EXAMPLE_KINDS = ("expected_cost", "confident_error", "memorization")


def dp_sgd_refusal(term: TermSpecBase) -> str | None:
    """Why DP-SGD cannot train ``term``, or None when it can."""
    kind = getattr(term, "kind")
    if isinstance(term, FairnessSpec):
        why = "a spread of group rates couples the rows of a minibatch, so per-example clipping does not bound one row's influence"
    elif isinstance(term, LeakageAdversarySpec):
        why = "its adversary trains on raw minibatches with no clipping or noise, and its loss couples the rows of a batch"
    elif kind not in PER_EXAMPLE_KINDS:
        why = "it is not known to be a mean of per-example losses"
    elif term.mode == "constraint":
        why = "its multiplier is updated from raw minibatch values, outside clipping and noise (penalty mode is allowed)"
    else:
        return None
    named = repr(kind) if term.key == kind else f"{term.key!r} ({kind})"
    return f"term {named} cannot be trained with DP-SGD: {why}"


class Memorization(Term):
    """Mean over rows of relu(floor − per-example BCE), in nats: penalizes rows whose training
    loss falls below ``floor`` (rows the model has begun to memorize). 0 when every row's
    loss is at or above the floor."""

    def __init__(self, floor: float):
        super().__init__()
        self.floor = floor

    def forward(self, batch: Batch) -> torch.Tensor:
        losses = F.binary_cross_entropy_with_logits(batch.logits, batch.y, reduction="none")
        return torch.relu(self.floor - losses).mean()


class MemorizationSpec(TermSpecBase):
    """A floor under per-example training loss. Answers to the ``mia_*`` metrics."""

    kind: Literal["memorization"]
    floor: float = Field(0.1, gt=0.0, description="per-example cross-entropy (nats) below which a row is penalized")

    def build(self, context: TermContext) -> Memorization:
        return Memorization(self.floor)


PRIVACY_SPECS = (MemorizationSpec,)
