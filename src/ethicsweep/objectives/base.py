"""What every loss term shares: the minibatch it sees, what it knows of the data, and its spec.

A term is a ``torch.nn.Module`` (so a term with parameters, such as an adversary, trains
with the model and is checkpointed with it) whose ``forward(batch)`` returns an
unweighted scalar. Its spec — a pydantic model with a ``kind`` — says how it enters the
loss: as a penalty with a fixed ``weight``, or as a constraint ``value <= bound`` whose
Lagrange multiplier adapts during training.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from ethicsweep.objectives.costs import CostModel


@dataclass(frozen=True)
class Batch:
    """One minibatch as the terms see it.

    ``logits`` are the model's logits of P(y=1), shape (n,); ``y`` is 0/1 float;
    ``groups`` and ``context`` are integer codes; ``abstain_logits`` is present when the
    model has a trained abstain option.
    """

    logits: torch.Tensor
    y: torch.Tensor
    groups: torch.Tensor
    context: torch.Tensor | None = None
    abstain_logits: torch.Tensor | None = None

    @property
    def proba(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


@dataclass(frozen=True)
class TermContext:
    """What a term may know of the data when it is built (from the training split only)."""

    group_names: tuple[str, ...]
    group_counts: np.ndarray  # rows per group in the training split
    min_group_size: int = 30
    context_names: tuple[str, ...] = ()
    threshold: float = 0.5  # the model's decision threshold t
    harm: CostModel = field(default_factory=CostModel)
    abstain_output: bool = False  # the model has a trained abstain output

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def eligible_groups(self) -> torch.Tensor:
        """Mask of groups with at least ``min_group_size`` training rows."""
        return torch.as_tensor(np.asarray(self.group_counts) >= self.min_group_size)


class Term(nn.Module):
    """A differentiable loss term: ``forward(batch)`` returns an unweighted scalar."""

    @abstractmethod
    def forward(self, batch: Batch) -> torch.Tensor: ...

    def hard_value(self, batch: Batch) -> torch.Tensor | None:
        """The exact (non-differentiable) counterpart on this batch, if the term has one.

        In constraint mode the multiplier is updated from it (a proxy-Lagrangian): the
        model trains on the soft value, the multiplier answers to the real one.
        """
        return None


#: Names of loss parts that are not terms: the task loss and the minimized total.
RESERVED_NAMES = ("bce", "total")


class TermSpecBase(BaseModel):
    """Fields every term spec has. Subclasses add ``kind`` and their own parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    name: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="defaults to kind")
    mode: Literal["penalty", "constraint"] = Field("penalty", description="fixed weight, or a bound with an adaptive multiplier")
    weight: float = Field(1.0, ge=0.0, description="penalty mode: the term's weight in the loss")
    bound: float | None = Field(None, ge=0.0, description="constraint mode: the term must stay <= bound")
    dual_lr: float = Field(0.05, gt=0.0, description="constraint mode: the multiplier's step size per minibatch")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str | None) -> str | None:
        if name in RESERVED_NAMES:
            raise ValueError(f"the name {name!r} is reserved for a loss part that is not a term; choose another")
        return name

    @model_validator(mode="after")
    def _constraint_needs_bound(self) -> TermSpecBase:
        if self.mode == "constraint" and self.bound is None:
            raise ValueError(f"term {self.key!r} is in constraint mode: give its 'bound'")
        return self

    @property
    def key(self) -> str:
        return self.name or getattr(self, "kind")

    @abstractmethod
    def build(self, context: TermContext) -> Term:
        """The term this spec describes, for data described by ``context``."""
