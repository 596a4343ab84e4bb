"""MultiObjectiveASHA: hand-computed decisions, rungs, invalid objectives, state; one Ray run."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import pytest
import ray
from ray import tune

from ethicsweep.search.mo_asha import MultiObjectiveASHA, promotion_order, rung_milestones

CONTINUE, STOP = "CONTINUE", "STOP"
OBJECTIVES = [("acc", "max"), ("gap", "min")]


def trial(trial_id: str) -> SimpleNamespace:
    """The scheduler reads only ``trial.trial_id``."""
    return SimpleNamespace(trial_id=trial_id)


def report(scheduler: MultiObjectiveASHA, trial_id: str, iteration: int, **objectives: float) -> str:
    return scheduler.on_trial_result(None, trial(trial_id), {"training_iteration": iteration, **objectives})


@pytest.mark.parametrize(
    ("grace", "eta", "max_t", "expected"),
    [
        (1, 3, 100, [1, 3, 9, 27, 81]),
        (1, 3, 9, [1, 3]),  # 9 is max_t: not a rung
        (1, 2, 8, [1, 2, 4]),
        (2, 3, 20, [2, 6, 18]),
        (4, 2, 40, [4, 8, 16, 32]),
        (1, 1.5, 4, [1, 1.5, 2.25, 3.375]),
        (5, 2, 5, []),
    ],
)
def test_rung_milestones(grace, eta, max_t, expected):
    assert rung_milestones(grace, eta, max_t) == pytest.approx(expected)
    assert MultiObjectiveASHA(OBJECTIVES, grace_period=grace, reduction_factor=eta, max_t=max_t).rungs == pytest.approx(expected)


def test_promotion_order_rank_then_crowding_then_arrival():
    # Minimization form. a, b, c, d are the front (rank 0); e is dominated by c (rank 1).
    # Crowding in rank 0 (pymoo, mean over objectives of the normalised neighbour gap):
    # a, d are extremes: inf (tie: a arrived first); b = (0.6 + 0.6) / 2 = 0.6; c = (0.9 + 0.5) / 2 = 0.7.
    a, b, c, d, e = (0.0, 1.0), (0.1, 0.5), (0.6, 0.4), (1.0, 0.0), (0.7, 0.6)
    assert promotion_order([a, b, c, d, e, None]) == [0, 3, 2, 1, 4, 5]
    assert promotion_order([None, None]) == [0, 1]


def test_hand_computed_decisions_eta_2():
    s = MultiObjectiveASHA(OBJECTIVES, grace_period=1, reduction_factor=2, max_t=8)  # rungs 1, 2, 4
    # Rung 1, minimization form (-acc, gap). keep = max(1, floor(n / 2)).
    assert report(s, "t1", 1, acc=0.80, gap=0.10) == CONTINUE  # n=1 < 2
    assert report(s, "t2", 1, acc=0.70, gap=0.20) == STOP  # n=2, keep 1; t2 dominated by t1: order t1, t2
    # n=3, keep 1; ranks t1 0, t3 0 (trade-off), t2 1; rank 0 has two points, both crowding inf,
    # so arrival breaks the tie: order t1, t3, t2.
    assert report(s, "t3", 1, acc=0.90, gap=0.30) == STOP
    assert report(s, "t4", 1, acc=0.95, gap=0.05) == CONTINUE  # n=4, keep 2; t4 dominates all: rank 0
    assert report(s, "t5", 1, acc=math.nan, gap=0.05) == STOP  # invalid, not alone
    # n=6, keep 3; rank 0 t4; rank 1 t1, t3, t6 (crowding inf, inf, (1 + 1) / 2 = 1); rank 2 t2; t5 last.
    # Order t4, t1, t3, t6, t2, t5: t6 is 4th.
    assert report(s, "t6", 1, acc=0.85, gap=0.15) == STOP
    assert report(s, "t2", 1, acc=0.99, gap=0.0) == CONTINUE  # already judged at rung 1: not again
    assert report(s, "t4", 2, acc=0.96, gap=0.05) == CONTINUE  # rung 2, n=1
    assert report(s, "t1", 2, acc=0.81, gap=0.10) == STOP  # rung 2, n=2, keep 1; t4 dominates t1
    assert report(s, "t4", 3, acc=0.97, gap=0.05) == CONTINUE  # between rungs
    assert report(s, "t4", 4, acc=0.97, gap=0.05) == CONTINUE  # rung 4, n=1
    assert report(s, "t4", 8, acc=0.98, gap=0.05) == STOP  # max_t reached: finished
    assert s.stopped_at == {1: 4, 2: 1, 4: 0}
    assert list(s.recorded[1]) == ["t1", "t2", "t3", "t4", "t5", "t6"]
    assert s.recorded[1]["t1"] == pytest.approx((-0.80, 0.10))
    assert s.recorded[1]["t5"] is None


def test_warm_up_continues_while_fewer_than_eta_recorded():
    s = MultiObjectiveASHA(OBJECTIVES, reduction_factor=3, max_t=9)  # rungs 1, 3
    assert report(s, "best", 1, acc=0.9, gap=0.0) == CONTINUE  # n=1 < 3
    assert report(s, "worse", 1, acc=0.5, gap=0.5) == CONTINUE  # n=2 < 3, though dominated
    assert report(s, "worst", 1, acc=0.1, gap=0.9) == STOP  # n=3, keep 1: order best, worse, worst
    assert report(s, "new_best", 1, acc=1.0, gap=0.0) == CONTINUE  # n=4, keep 1: it dominates all
    assert report(s, "mid", 1, acc=0.6, gap=0.4) == STOP  # n=5, keep 1


def test_invalid_objectives_rank_worst_and_never_raise():
    s = MultiObjectiveASHA(OBJECTIVES, reduction_factor=3, max_t=9)
    assert report(s, "nan", 1, acc=math.nan, gap=0.1) == CONTINUE  # invalid but alone at the rung
    assert report(s, "missing", 1, acc=0.5) == STOP  # gap missing; n=2, not alone
    assert report(s, "inf", 1, acc=0.5, gap=math.inf) == STOP
    assert report(s, "text", 1, acc="high", gap=0.1) == STOP
    assert report(s, "ok", 1, acc=0.1, gap=0.9) == CONTINUE  # n=5, keep 1: the only valid vector
    assert s.stopped_at[1] == 3
    assert s.on_trial_result(None, trial("no_time"), {"acc": 0.5, "gap": 0.1}) == CONTINUE  # no time_attr
    assert "no_time" not in s.recorded[1]


def test_time_jump_records_highest_rung_reached_once():
    s = MultiObjectiveASHA(OBJECTIVES, time_attr="time_total_s", reduction_factor=3, max_t=100)  # 1, 3, 9, 27, 81
    assert s.on_trial_result(None, trial("a"), {"time_total_s": 0.5, "acc": 0.5, "gap": 0.1}) == CONTINUE
    assert s.on_trial_result(None, trial("a"), {"time_total_s": 10.0, "acc": 0.5, "gap": 0.1}) == CONTINUE
    assert s.on_trial_result(None, trial("a"), {"time_total_s": 12.0, "acc": 0.5, "gap": 0.1}) == CONTINUE
    assert [rung for rung in s.rungs if "a" in s.recorded[rung]] == [9]


def test_complete_records_final_result_and_remove_keeps_records():
    s = MultiObjectiveASHA(OBJECTIVES, reduction_factor=2, max_t=8)  # rungs 1, 2, 4
    s.on_trial_complete(None, trial("short"), {"training_iteration": 2, "acc": 0.9, "gap": 0.0})
    s.on_trial_complete(None, trial("empty"), None)
    s.on_trial_complete(None, trial("done"), {"training_iteration": 8, "acc": 0.9, "gap": 0.0})
    assert s.recorded[2] == {"short": (-0.9, 0.0)} and not s.recorded[4]
    s.on_trial_remove(None, trial("short"))
    assert report(s, "late", 2, acc=0.5, gap=0.5) == STOP  # n=2, keep 1: "short" still counts


def test_search_properties_reject_tune_config_metric():
    s = MultiObjectiveASHA(OBJECTIVES)
    assert s.set_search_properties(None, None, config={})
    assert not s.set_search_properties("acc", "max")
    assert s.metric is None  # Ray's strict metric check then leaves results with missing objectives alone


def scheduler_with_history() -> MultiObjectiveASHA:
    s = MultiObjectiveASHA(OBJECTIVES, reduction_factor=2, max_t=8)
    report(s, "t1", 1, acc=0.8, gap=0.1)
    report(s, "t2", 1, acc=0.7, gap=0.2)
    report(s, "t3", 1, acc=math.nan, gap=0.2)
    return s


def test_pickle_round_trip_keeps_decisions():
    s = scheduler_with_history()
    copy = pickle.loads(pickle.dumps(s))
    assert copy.recorded == s.recorded and copy.stopped_at == s.stopped_at and copy.rungs == s.rungs
    assert report(copy, "t4", 1, acc=0.75, gap=0.15) == report(s, "t4", 1, acc=0.75, gap=0.15) == CONTINUE  # n=4, keep 2: t1, t4, t2, t3


def test_save_restore(tmp_path):
    s = scheduler_with_history()
    path = str(tmp_path / "scheduler.pkl")
    s.save(path)
    restored = MultiObjectiveASHA([("other", "min")], reduction_factor=5, max_t=50)
    restored.restore(path)
    assert restored.recorded == s.recorded and restored.stopped_at == s.stopped_at == {1: 2, 2: 0, 4: 0}
    assert restored.debug_string() == s.debug_string()
    assert "rung 1: 3 recorded, 2 stopped" in s.debug_string()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"objectives": []}, "objectives is empty"),
        ({"objectives": [("acc", "up")]}, "mode of 'acc' is 'up'"),
        ({"grace_period": 0}, "grace_period is 0"),
        ({"reduction_factor": 1}, "reduction_factor is 1"),
        ({"grace_period": 5, "max_t": 3}, "max_t is 3"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiObjectiveASHA(**{"objectives": OBJECTIVES, **kwargs})


@pytest.mark.e2e
def test_ray_tune_stops_dominated_trials_early(tmp_path):
    def quality_trainable(config: dict) -> None:  # defined here so that Ray ships it by value
        """acc rises with ``a`` and iterations, gap falls with ``b``: (a max, b min) dominates."""
        for iteration in range(1, 10):
            tune.report({"acc": config["a"] * iteration / 9, "gap": 0.5 - config["b"]})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            quality_trainable,
            param_space={"a": tune.grid_search([0.5, 0.9, 0.2, 0.7]), "b": tune.grid_search([0.1, 0.3])},
            tune_config=tune.TuneConfig(scheduler=MultiObjectiveASHA(OBJECTIVES, reduction_factor=3, max_t=9)),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    iterations = {(r.config["a"], r.config["b"]): r.metrics["training_iteration"] for r in results}
    assert len(iterations) == 8 and not results.errors
    assert iterations[(0.9, 0.3)] == 9  # dominates every other trial at every rung
    assert min(iterations.values()) < 9


def test_state_is_a_snapshot():
    """get_state copies: records made after it do not leak into the saved state, and a
    state set on a scheduler stays its own."""
    s = scheduler_with_history()
    state = s.get_state()
    report(s, "t4", 1, acc=0.75, gap=0.15)
    assert set(state["recorded"][1]) == {"t1", "t2", "t3"} and set(s.recorded[1]) == {"t1", "t2", "t3", "t4"}
    fresh = MultiObjectiveASHA(OBJECTIVES, reduction_factor=2, max_t=8)
    fresh.set_state(state)
    state["recorded"][1].clear()
    assert set(fresh.recorded[1]) == {"t1", "t2", "t3"} and fresh.stopped_at == {1: 2, 2: 0, 4: 0}
