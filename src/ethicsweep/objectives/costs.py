"""The cost model of harm: cost matrices per context and stakeholder weights per group.

A cost matrix C has a row per true label (y = 0, 1) and a column per decision
(0, 1, abstain); the abstain column is the human-review cost. A context column of the
data picks the matrix of each row (``by_context``), else ``default``; stakeholder
weights per group scale a row's cost. The ``harm`` metric is the mean over rows of
``group_weight · C_ctx[y, decision]``.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ethicsweep.errors import SpecError

DECISIONS = ("decide 0", "decide 1", "abstain")
ABSTAIN = 2


def _check_matrix(matrix: list[list[float]], where: str) -> list[list[float]]:
    shape = (len(matrix), *sorted({len(row) for row in matrix}))
    if shape != (2, 3):
        raise ValueError(
            f"{where}: a cost matrix has 2 rows (y = 0, y = 1) of 3 costs (decide 0, decide 1, abstain); "
            f"got {len(matrix)} rows of {', '.join(str(len(r)) for r in matrix) or 'no'} values"
        )
    if any(c < 0 for row in matrix for c in row):
        raise ValueError(f"{where}: costs must be >= 0, got {matrix}")
    return matrix


class CostModel(BaseModel):
    """Cost matrices per context and stakeholder weights per group (spec section ``harm``).

    The default charges each wrong decision 1, a right one 0, and abstaining 0.5.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    default: list[list[float]] = Field(default_factory=lambda: [[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])
    by_context: dict[str, list[list[float]]] = Field(default_factory=dict, description="a matrix per value of data.context")
    group_weights: dict[str, float] = Field(default_factory=dict, description="cost scale per group name (default 1)")
    confidence_threshold: float = Field(0.9, gt=0.5, le=1.0, description="τ of confident_error_rate")

    @field_validator("default")
    @classmethod
    def _default_shape(cls, matrix: list[list[float]]) -> list[list[float]]:
        return _check_matrix(matrix, "harm.default")

    @field_validator("by_context")
    @classmethod
    def _context_shapes(cls, matrices: dict[str, list[list[float]]]) -> dict[str, list[list[float]]]:
        for context, matrix in matrices.items():
            _check_matrix(matrix, f"harm.by_context.{context}")
        return matrices

    @field_validator("group_weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        for group, weight in weights.items():
            if weight <= 0:
                raise ValueError(f"the weight of group {group!r} must be > 0, got {weight}")
        return weights

    def matrices(self, context_names: tuple[str, ...], strict: bool = True) -> np.ndarray:
        """Cost matrices, shape (max(1, n_contexts), 2, 3): one per context code, in code order.

        ``strict``: a context named in ``by_context`` but absent from ``context_names`` is an
        error (a spec mistake); otherwise it is ignored (new data that lacks it)."""
        unknown = sorted(set(self.by_context) - set(context_names))
        if unknown and strict:
            allowed = ", ".join(context_names) if context_names else "none: set data.context to a column"
            raise SpecError(f"harm.by_context: context {unknown[0]!r} does not occur in the data; contexts: {allowed}")
        if not context_names:
            return np.asarray([self.default], dtype=np.float64)
        return np.asarray([self.by_context.get(name, self.default) for name in context_names], dtype=np.float64)

    def weights(self, group_names: tuple[str, ...], strict: bool = True) -> np.ndarray:
        """Cost scale of each group code; ``strict`` as in :meth:`matrices`."""
        unknown = sorted(set(self.group_weights) - set(group_names))
        if unknown and strict:
            raise SpecError(f"harm.group_weights: group {unknown[0]!r} does not occur in the data; groups: {', '.join(group_names)}")
        return np.asarray([self.group_weights.get(name, 1.0) for name in group_names], dtype=np.float64)
