"""The Optuna searcher Ray Tune drives: the sampler asked for (really NSGA-II, not TPE),
picklable, constraints and warm start, and no trial left RUNNING."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ethicsweep.rules import Rule
from ethicsweep.search import OptunaSearcher, SamplerSpec
from ethicsweep.search.optuna_searcher import constraint_values

SPACE = {"training.lr": FloatDistribution(1e-4, 1e-1, log=True), "model.hidden": IntDistribution(8, 64)}
OBJECTIVES = [("val/accuracy", "max"), ("val/dp_gap", "min")]


def make(name: str = "nsga2", seed: int = 0) -> OptunaSearcher:
    return OptunaSearcher(SPACE, OBJECTIVES, SamplerSpec(name, seed, population_size=4))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("nsga2", optuna.samplers.NSGAIISampler), ("nsga3", optuna.samplers.NSGAIIISampler), ("tpe", optuna.samplers.TPESampler),
     ("gp", optuna.samplers.GPSampler), ("random", optuna.samplers.RandomSampler)],
)  # fmt: skip
def test_each_searcher_name_builds_its_sampler_not_a_default(name: str, kind: type) -> None:
    # with no sampler given, Ray's OptunaSearch would use TPE: nsga2 must really be NSGA-II
    assert type(make(name).study.sampler) is kind


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "tpe", "gp", "random"])
def test_every_sampler_runs_two_objectives_past_its_startup_and_pickles(name: str) -> None:
    searcher = make(name)
    for i in range(14):  # TPE and GP model the history after 10 startup trials
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val/accuracy": config["training.lr"], "val/dp_gap": config["model.hidden"] / 64})
        if i == 6:
            searcher = pickle.loads(pickle.dumps(searcher))
    states = [t.state for t in searcher.study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE] * 14


def test_constraint_values_reach_the_sampler_and_nan_counts_as_broken() -> None:
    searcher = OptunaSearcher(SPACE, OBJECTIVES, SamplerSpec("nsga2", 0, 4), constraints=[Rule.parse("epsilon <= 3", "val"),
                              Rule.parse("accuracy >= 0.8", "val")])  # fmt: skip
    assert searcher.study.sampler._constraints_func is not None
    results = [{"val/accuracy": 0.85, "val/dp_gap": 0.1, "val/epsilon": 5.0},  # epsilon broken by 2; accuracy holds (-0.05)
               {"val/accuracy": 0.75, "val/dp_gap": 0.1, "val/epsilon": 1.0},  # accuracy broken by 0.05
               {"val/accuracy": 0.9, "val/dp_gap": 0.1, "val/epsilon": math.nan}]  # fmt: skip
    for i, result in enumerate(results):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", result)
    trials = searcher.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # infeasible is not failed
    assert constraint_values(trials[0]) == pytest.approx([2.0, -0.05])
    assert constraint_values(trials[1]) == pytest.approx([-2.0, 0.05])
    assert constraint_values(trials[2])[0] == math.inf
    # Optuna records them for its own feasibility ranking
    assert trials[0].system_attrs["constraints"] == pytest.approx([2.0, -0.05])


def test_initial_configurations_come_first_and_once() -> None:
    initial = [{"training.lr": 0.01, "model.hidden": 32}, {"training.lr": 0.001, "model.hidden": 8}]
    searcher = OptunaSearcher(SPACE, OBJECTIVES, SamplerSpec("nsga2", 0, 4), initial=initial)
    assert searcher.suggest("t0") == initial[0]
    searcher.on_trial_complete("t0", {"val/accuracy": 0.8, "val/dp_gap": 0.1})
    restored = pickle.loads(pickle.dumps(searcher))
    assert restored.suggest("t1") == initial[1]
    assert restored.suggest("t2") not in initial


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


@pytest.mark.parametrize("name", ["random", "nsga2", "tpe"])
def test_a_restored_searcher_does_not_repeat_its_earlier_suggestions(name: str) -> None:
    """Found by a fresh-install test: after --resume, trials 6-8 had the very configurations
    of trials 1-3 (the rebuilt sampler started again from the seed)."""
    searcher = make(name)
    before = []
    for i in range(3):
        before.append(searcher.suggest(f"t{i}"))
        searcher.on_trial_complete(f"t{i}", {"val/accuracy": 0.8 + i / 100, "val/dp_gap": 0.2 - i / 100})
    state = pickle.dumps(searcher)
    after = [pickle.loads(state).suggest("t3") for _ in range(2)]
    assert after[0] == after[1]  # deterministic: the same saved state suggests the same
    restored = pickle.loads(state)
    later = [restored.suggest(f"t{i}") for i in range(3, 6)]
    assert not any(config in before for config in later), (before, later)
