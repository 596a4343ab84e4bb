"""Choosing the deployed model: rules parsed by a grammar, and every method against a hand
computation on a fixture of known points.

Fixture (test split), objectives accuracy (max) and dp_gap (min):

    candidate  accuracy  dp_gap   f̂1 = (0.86 − acc) / 0.06   f̂2 = gap / 0.2
    1          0.86      0.20     0                          1
    2          0.85      0.10     1/6                        0.5
    3          0.84      0.04     1/3                        0.2
    4          0.80      0.00     1                          0
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ethicsweep.analysis.selection import Candidate, Rule, SelectionError, parse_weights, select

OBJECTIVES = [("accuracy", "max"), ("dp_gap", "min")]
POINTS = [(0.86, 0.20), (0.85, 0.10), (0.84, 0.04), (0.80, 0.00)]


def _candidates(points=POINTS) -> list[Candidate]:
    return [
        Candidate(version=str(10 + k), number=k, metrics={"test/accuracy": acc, "test/dp_gap": gap, "val/accuracy": acc - 0.01})
        for k, (acc, gap) in enumerate(points, start=1)
    ]


def _chosen(**kwargs) -> int:
    selection = select(_candidates(), kwargs.pop("rules", []), OBJECTIVES, **kwargs)
    return selection.chosen.number


def test_prefer_the_best_accuracy_among_those_meeting_the_rules():
    assert _chosen(rules=[Rule.parse("dp_gap <= 0.05")], prefer="test/accuracy") == 3


def test_prefer_a_metric_to_minimize():
    assert _chosen(prefer="test/dp_gap") == 4


def test_prefer_defaults_to_the_first_objective():
    assert _chosen() == 1


def test_knee_is_the_smallest_sum_of_normalized_objectives():
    # sums: 1, 2/3, 0.5333, 1
    assert _chosen(method="knee") == 3


def test_asf_with_equal_weights():
    # max(0.5 f̂1, 0.5 f̂2): 0.5, 0.25, 0.1667, 0.5
    assert _chosen(method="asf") == 3


def test_asf_with_weight_on_accuracy():
    # max(0.8 f̂1, 0.2 f̂2): 0.2, 0.1333, 0.2667, 0.8
    assert _chosen(method="asf", weights=np.array([0.8, 0.2])) == 2


def test_pseudo_weights_with_equal_weights():
    # pseudo-weights (1 − f̂) / Σ: (1, 0), (0.625, 0.375), (0.4545, 0.5455), (0, 1); L1 to (.5, .5): 1, .25, .0909, 1
    assert _chosen(method="pseudo-weights") == 3


def test_pseudo_weights_with_weight_on_accuracy():
    # L1 to (.8, .2): 0.4, 0.35, 0.6909, 1.6
    assert _chosen(method="pseudo-weights", weights=np.array([0.8, 0.2])) == 2


def test_normalization_is_over_the_candidates_that_meet_the_rules():
    # without candidate 4: f̂1 = (0.86 − acc)/0.02 → 0, .5, 1; f̂2 = (gap − .04)/.16 → 1, .375, 0; sums 1, .875, 1
    assert _chosen(method="knee", rules=[Rule.parse("accuracy >= 0.81")]) == 2


def test_every_loser_has_a_reason():
    selection = select(_candidates(), [Rule.parse("dp_gap <= 0.15")], OBJECTIVES, prefer="test/accuracy")
    assert selection.chosen.number == 2
    assert selection.reasons["11"] == "breaks test/dp_gap <= 0.15 (test/dp_gap = 0.2)"
    assert selection.reasons["12"] == "chosen: test/accuracy = 0.85"
    assert selection.reasons["13"] == "test/accuracy = 0.84, worse than the chosen"


def test_ties_go_to_the_lower_candidate_number():
    selection = select(_candidates([(0.85, 0.1), (0.85, 0.05)]), [], OBJECTIVES, prefer="test/accuracy")
    assert selection.chosen.number == 1 and "ties with the chosen" in selection.reasons["12"]


def test_nothing_meets_the_rules_names_the_closest():
    # shortfall (0.9 − acc)/0.9: .0444, .0556, .0667, .1111
    selection = select(_candidates(), [Rule.parse("accuracy >= 0.9")], OBJECTIVES)
    assert selection.chosen is None
    assert [c.number for c in selection.closest] == [1, 2, 3]


def test_a_nan_metric_never_meets_a_rule():
    candidates = _candidates()
    candidates[3] = Candidate("14", 4, {"test/accuracy": 0.9, "test/dp_gap": math.nan})
    selection = select(candidates, [Rule.parse("dp_gap <= 0.5")], OBJECTIVES, prefer="test/accuracy")
    assert selection.chosen.number == 1 and "nan" in selection.reasons["14"]


def test_rules_read_the_chosen_split():
    assert Rule.parse("accuracy >= 0.8", split="val").key == "val/accuracy"
    assert Rule.parse("test/accuracy>=.8", split="val") == Rule("test/accuracy", ">=", 0.8)
    assert Rule.parse("  dp_gap == 1e-2 ") == Rule("test/dp_gap", "==", 0.01)
    # candidate 1's val accuracy is 0.85: it breaks val/accuracy > 0.85
    assert not Rule.parse("val/accuracy > 0.85").holds(_candidates()[0].value("val/accuracy"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("dp_gap => 0.1", "not a rule"),
        ("dp_gap <= nan", "not a rule"),
        ("dp_gap <= 0.1 or 1", "not a rule"),
        ("__import__('os').system('true') <= 1", "not a rule"),
        ("", "not a rule"),
        ("gap <= 0.1", "unknown metric 'gap'"),
        ("train/dp_gap <= 0.1", "unknown metric 'train/dp_gap'"),
        ("val/test/dp_gap <= 0.1", "unknown metric"),
    ],
)
def test_bad_rules_are_one_line_errors(text, message):
    with pytest.raises(SelectionError, match=message) as error:
        Rule.parse(text)
    assert "\n" not in str(error.value)


def test_weights_by_name_or_in_order():
    assert parse_weights("accuracy=0.7,dp_gap=0.3", OBJECTIVES).tolist() == pytest.approx([0.7, 0.3])
    assert parse_weights("1, 3", OBJECTIVES).tolist() == pytest.approx([0.25, 0.75])
    assert parse_weights("accuracy=2,dp_gap=0", OBJECTIVES).tolist() == [1.0, 0.0]
    assert parse_weights(None, OBJECTIVES).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("text", ["-1,2", "1,2,3", "x", "0,0", "harm=1", "inf,1", "accuracy=0.7"])
def test_bad_weights_are_one_line_errors(text):
    with pytest.raises(SelectionError, match="--weights"):
        parse_weights(text, OBJECTIVES)
