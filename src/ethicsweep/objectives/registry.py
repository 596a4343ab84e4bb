"""Every term kind a spec can name, as one discriminated union of the terms' spec models."""

from __future__ import annotations

from typing import Annotated, Union, get_args

from pydantic import Field

from ethicsweep.objectives.fairness import FAIRNESS_SPECS
from ethicsweep.objectives.harm import HARM_SPECS
from ethicsweep.objectives.leakage import LEAKAGE_SPECS
from ethicsweep.objectives.privacy import PRIVACY_SPECS

TERM_SPECS = (*FAIRNESS_SPECS, *HARM_SPECS, *LEAKAGE_SPECS, *PRIVACY_SPECS)

#: A term spec: the ``kind`` field picks the model that validates the rest.
TermSpec = Annotated[Union[TERM_SPECS], Field(discriminator="kind")]  # noqa: UP007

TERM_KINDS: tuple[str, ...] = tuple(get_args(spec.model_fields["kind"].annotation)[0] for spec in TERM_SPECS)
