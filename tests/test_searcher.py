"""The Optuna searcher Ray Tune drives: really NSGA-II, picklable, and no trial left RUNNING."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ethicsweep.search import OptunaSearcher, SamplerSpec

SPACE = {"training.lr": FloatDistribution(1e-4, 1e-1, log=True), "model.hidden": IntDistribution(8, 64)}
OBJECTIVES = [("val/accuracy", "max"), ("val/dp_gap", "min")]


def make(name: str = "nsga2", seed: int = 0) -> OptunaSearcher:
    return OptunaSearcher(SPACE, OBJECTIVES, SamplerSpec(name, seed, population_size=4))


def test_the_sampler_is_nsga2_not_tpe() -> None:
    assert isinstance(make().study.sampler, optuna.samplers.NSGAIISampler)
    assert isinstance(make("random").study.sampler, optuna.samplers.RandomSampler)


def test_suggestions_lie_in_the_space_and_are_seeded() -> None:
    first, second = make(seed=7), make(seed=7)
    for i in range(6):
        a, b = first.suggest(f"t{i}"), second.suggest(f"t{i}")
        assert a == b
        assert 1e-4 <= a["training.lr"] <= 1e-1 and 8 <= a["model.hidden"] <= 64
        first.on_trial_complete(f"t{i}", {"val/accuracy": 0.8 + i / 100, "val/dp_gap": 0.1})
        second.on_trial_complete(f"t{i}", {"val/accuracy": 0.8 + i / 100, "val/dp_gap": 0.1})


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"val/accuracy": math.nan, "val/dp_gap": 0.1}, False),
        ({"val/accuracy": 0.8, "val/dp_gap": math.inf}, False),
        ({"val/accuracy": 0.8}, False),
        (None, True),
        ({}, False),
    ],
)
def test_bad_values_fail_the_trial_instead_of_leaving_it_running(result: dict | None, error: bool) -> None:
    searcher = make()
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", result, error=error)
    (trial,) = searcher.study.get_trials(deepcopy=False)
    assert trial.state == TrialState.FAIL
    assert searcher.fail_reasons["t0"]


def test_good_values_are_told_as_complete() -> None:
    searcher = make()
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"val/accuracy": 0.85, "val/dp_gap": 0.05})
    (trial,) = searcher.study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and trial.values == [0.85, 0.05]


def test_pickle_round_trip_keeps_the_history_and_goes_on(tmp_path) -> None:
    searcher = make()
    for i in range(5):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val/accuracy": 0.8 + i / 100, "val/dp_gap": 0.2 - i / 100})
    pending = searcher.suggest("t5")
    restored = pickle.loads(pickle.dumps(searcher))
    trials = restored.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5 + [TrialState.RUNNING]
    assert [t.values for t in trials[:5]] == [[0.8 + i / 100, 0.2 - i / 100] for i in range(5)]
    assert restored.suggest("t5") == pending  # Ray re-asks for a trial it already started
    restored.on_trial_complete("t5", {"val/accuracy": 0.9, "val/dp_gap": 0.01})
    assert restored.study.trials[5].state == TrialState.COMPLETE
    path = tmp_path / "searcher.pkl"
    restored.save(str(path))
    again = make()
    again.restore(str(path))
    assert len(again.study.trials) == 6
