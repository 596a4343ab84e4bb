"""The README stays true: every spec field and every term kind is documented, and the
README's two set-up commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ethicsweep.objectives.metrics import METRIC_DIRECTIONS
from ethicsweep.objectives.registry import TERM_KINDS, TERM_SPECS
from ethicsweep.spec import SweepSpec

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _fields(model: type[BaseModel]) -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _fields(annotation)
    return names


def test_every_spec_field_is_in_the_configuration_reference() -> None:
    reference = README[README.index("## Configuration reference") :]
    fields = _fields(SweepSpec)
    for spec in TERM_SPECS:
        fields |= set(spec.model_fields)
    missing = sorted(f for f in fields if f"{f}:" not in reference and f"`{f}`" not in README)
    assert not missing, f"fields not documented in README.md: {missing}"


def test_every_term_kind_and_metric_is_documented() -> None:
    for kind in TERM_KINDS:
        assert f"`{kind}`" in README, kind
    for metric in METRIC_DIRECTIONS:
        assert f"`{metric}`" in README, metric


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = ".venv/bin/python -m pytest -q"
    assert command in README and command in ci
