"""Which configurations an ablation trains, and its table, by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ethicsweep.analysis.ablation import Ablation, ablations
from ethicsweep.spec import TrainConfig


def test_one_config_per_term_and_one_without_dp_sgd() -> None:
    config = TrainConfig.model_validate({
        "terms": [{"kind": "confident_error", "weight": 2.0}, {"kind": "memorization", "weight": 0.5, "floor": 0.2}],
        "privacy": {"dp_sgd": True, "noise_multiplier": 1.0},
    })  # fmt: skip
    configs = ablations(config)
    assert list(configs) == ["full", "without confident_error", "without memorization", "without dp_sgd"]
    assert configs["full"] is config
    assert [t.kind for t in configs["without confident_error"].terms] == ["memorization"]
    assert configs["without confident_error"].privacy.dp_sgd
    assert [(t.kind, t.weight) for t in configs["without memorization"].terms] == [("confident_error", 2.0)]
    assert not configs["without dp_sgd"].privacy.dp_sgd and len(configs["without dp_sgd"].terms) == 2
    assert config.privacy.dp_sgd and len(config.terms) == 2  # the original is untouched


def test_a_plain_model_has_nothing_to_ablate() -> None:
    assert list(ablations(TrainConfig())) == ["full"]


def test_table_lists_values_and_changes_in_metric_order() -> None:
    metrics = pd.DataFrame(
        {"full": [0.83, 0.02, math.inf], "without demographic_parity": [0.85, 0.17, math.inf]},
        index=["accuracy", "dp_gap", "epsilon"],
    )
    table = Ablation(metrics).table()
    assert list(table.columns) == ["metric", "better", "full", "without demographic_parity", "change demographic_parity"]
    assert list(table["better"]) == ["max", "min", "min"]
    assert table["change demographic_parity"].iloc[0] == pytest.approx(0.02)
    assert table["change demographic_parity"].iloc[1] == pytest.approx(0.15)
    assert math.isnan(table["change demographic_parity"].iloc[2])  # inf - inf: undefined, not 0
