"""The example specs in configs/ and the demo spec validate, and build their terms on the real data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from ethicsweep.data import prepare
from ethicsweep.objectives.composite import Objective
from ethicsweep.spec import load_spec, parse_spec
from ethicsweep.trainables.train import term_context

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_spec_validates_and_builds(path: Path) -> None:
    spec = load_spec(path)
    data = prepare(spec.data, spec.seed)
    objective = Objective.from_specs(spec.train.terms, term_context(data, spec.train))
    assert [slot.name for slot in objective.slots] == [t.key for t in spec.train.terms]


def test_demo_spec_is_the_documented_one() -> None:
    spec = parse_spec(yaml.safe_load(resources.files("ethicsweep").joinpath("demo.yaml").read_text()))
    assert spec.data.dataset == "adult" and spec.data.sensitive == ["sex"]
    assert spec.search.searcher == "nsga2" and spec.search.num_trials >= 24
    assert [(o.metric, o.mode) for o in spec.search.objectives] == [("accuracy", "max"), ("dp_gap", "min")]
