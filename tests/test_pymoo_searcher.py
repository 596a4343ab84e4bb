"""The pymoo searcher Ray Tune drives: generations as batches of trials, failures told as
infeasible, every algorithm improving a toy front, and exact continuation after a pickle."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
from pymoo.indicators.hv import HV
from ray.tune.search import Searcher

from ethicsweep.search.pymoo_searcher import (
    FAILED_VIOLATION,
    PymooSearcher,
    decode,
    decode_value,
    reference_directions,
)
from ethicsweep.spec import Parameter

ZDT_SPACE = {f"model.x{i}": Parameter(type="float", low=0.0, high=1.0) for i in range(3)}
ZDT_OBJECTIVES = [("val/score", "max"), ("val/f2", "min")]
ALGORITHMS = ["nsga2", "nsga3", "smsemoa", "agemoea"]

Batch = list[tuple[str, dict]]


def zdt1(config: dict) -> tuple[float, float]:
    """ZDT1 on three variables, both minimized: f1 = x0, f2 = g (1 - sqrt(f1 / g))."""
    f1 = config["model.x0"]
    g = 1 + 9 * (config["model.x1"] + config["model.x2"]) / 2
    return f1, g * (1 - math.sqrt(f1 / g))


def zdt_result(config: dict) -> dict:
    f1, f2 = zdt1(config)
    return {"val/score": 1 - f1, "val/f2": f2}  # score is maximized: 1 - f1


def make(algorithm: str = "nsga2", seed: int = 0, population_size: int = 4, **kwargs) -> PymooSearcher:
    return PymooSearcher(ZDT_SPACE, ZDT_OBJECTIVES, algorithm, seed, population_size, **kwargs)


def hand_out(searcher: PymooSearcher, start: int) -> Batch:
    """Every suggestion until ``suggest`` returns None, trial ids numbered from ``start``."""
    batch = []
    while (config := searcher.suggest(f"t{start + len(batch)}")) is not None:
        batch.append((f"t{start + len(batch)}", config))
    return batch


def run(searcher: PymooSearcher, generations: int, evaluate: Callable[[dict], dict] = zdt_result) -> list[Batch]:
    """Drive ``generations`` generations, completing each trial with ``evaluate(config)``."""
    batches: list[Batch] = []
    for _ in range(generations):
        batch = hand_out(searcher, sum(map(len, batches)))
        for trial_id, config in batch:
            searcher.on_trial_complete(trial_id, evaluate(config))
        batches.append(batch)
    return batches


# --- the encoding ----------------------------------------------------------------------


def test_floats_map_linearly_or_on_the_log_scale() -> None:
    linear = Parameter(type="float", low=-1.0, high=3.0)
    assert [decode_value(linear, u) for u in (0.0, 0.25, 1.0)] == [-1.0, 0.0, 3.0]
    log = Parameter(type="float", low=1e-4, high=1e-2, log=True)
    assert decode_value(log, 0.0) == pytest.approx(1e-4)
    assert decode_value(log, 0.5) == pytest.approx(1e-3)
    assert decode_value(log, 1.0) == pytest.approx(1e-2)
    assert decode_value(linear, -0.5) == -1.0 and decode_value(linear, 1.5) == 3.0  # clipped


def test_ints_round_half_up_and_stay_in_range() -> None:
    hidden = Parameter(type="int", low=8, high=12)
    assert [decode_value(hidden, u) for u in (0.0, 0.1, 0.125, 0.5, 0.874, 1.0, 2.0)] == [8, 8, 9, 10, 11, 12, 12]
    assert all(isinstance(decode_value(hidden, u), int) for u in (0.0, 0.3, 1.0))
    log = Parameter(type="int", low=1, high=100, log=True)
    assert [decode_value(log, u) for u in (0.0, 0.5, 1.0)] == [1, 10, 100]


def test_categoricals_take_floor_of_u_times_k() -> None:
    kind = Parameter(type="categorical", choices=["a", "b", "c"])
    assert [decode_value(kind, u) for u in (0.0, 0.33, 0.34, 0.66, 0.67, 0.999, 1.0)] == ["a", "a", "b", "b", "c", "c", "c"]


def test_decode_follows_the_space_order() -> None:
    space = {"training.lr": Parameter(type="float", low=0.0, high=2.0), "model.kind": Parameter(type="categorical", choices=[1, 2])}
    assert decode(space, [0.5, 0.75]) == {"training.lr": 1.0, "model.kind": 2}
    with pytest.raises(ValueError, match="2 parameters"):
        decode(space, [0.5])


def test_reference_directions_number_the_population() -> None:
    for n_obj, n_points in [(2, 6), (3, 10), (4, 10), (3, 8)]:  # (3, 8) has no Das-Dennis layout
        directions = reference_directions(n_obj, n_points, seed=0)
        assert directions.shape == (n_points, n_obj)
        assert np.allclose(directions.sum(axis=1), 1.0) and (directions >= 0).all()


# --- generations as batches -------------------------------------------------------------


def test_a_generation_is_handed_out_then_the_next_only_after_all_results() -> None:
    searcher = make(population_size=4)
    first = hand_out(searcher, 0)
    assert len(first) == 4 and searcher.suggest("t4") is None
    for trial_id, config in first[:3]:
        searcher.on_trial_complete(trial_id, zdt_result(config))
        assert searcher.suggest("t4") is None
    searcher.on_trial_complete(first[3][0], zdt_result(first[3][1]))
    second = hand_out(searcher, 4)
    assert len(second) == 4 and not {tuple(c.values()) for _, c in second} & {tuple(c.values()) for _, c in first}
    assert all(0.0 <= v <= 1.0 for _, c in first + second for v in c.values())


def test_a_repeated_or_unknown_completion_changes_nothing_and_re_asks_repeat() -> None:
    searcher = make(population_size=4)
    first = hand_out(searcher, 0)
    assert searcher.suggest("t1") == first[1][1]  # Ray re-asks after a restore
    searcher.on_trial_complete("t0", zdt_result(first[0][1]))
    searcher.on_trial_complete("t0", {"val/score": math.nan, "val/f2": 1.0})
    searcher.on_trial_complete("elsewhere", None, error=True)
    assert searcher.fail_reasons == {} and searcher.suggest("t4") is None


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ({"val/score": math.nan, "val/f2": 0.1}, False),
        ({"val/score": 0.8, "val/f2": math.inf}, False),
        ({"val/score": 0.8, "val/f2": -math.inf}, False),
        ({"val/score": 0.8}, False),
        ({"val/score": "0.8", "val/f2": 0.1}, False),
        ({}, False),
        (None, True),
    ],
)
def test_bad_trials_are_told_infeasible_and_the_search_goes_on(result: dict | None, error: bool) -> None:
    searcher = make(population_size=4)
    first = hand_out(searcher, 0)
    for trial_id, config in first[1:]:
        searcher.on_trial_complete(trial_id, zdt_result(config))
    searcher.on_trial_complete("t0", result, error=error)
    assert list(searcher.fail_reasons) == ["t0"] and searcher.fail_reasons["t0"]
    told = searcher.algorithm.off
    F, CV = told.get("F"), told.get("CV").ravel()
    assert np.isfinite(F).all() and CV[0] >= FAILED_VIOLATION and (CV[1:] == 0).all()
    worst = np.array([[c["model.x0"] - 1, zdt1(c)[1]] for _, c in first[1:]]).max(axis=0)  # minimized
    assert F[0] == pytest.approx(worst)
    assert len(hand_out(searcher, 4)) == 4


def test_a_generation_that_fails_whole_still_gives_the_next() -> None:
    searcher = make(population_size=4)
    for trial_id, _ in hand_out(searcher, 0):
        searcher.on_trial_complete(trial_id, None, error=True)
    assert len(searcher.fail_reasons) == 4 and np.isfinite(searcher.algorithm.off.get("F")).all()
    assert len(hand_out(searcher, 4)) == 4


def test_the_search_finishes_when_pymoo_has_no_new_individual(monkeypatch) -> None:
    searcher = make(population_size=4)
    run(searcher, 1)
    monkeypatch.setattr(searcher.algorithm, "ask", lambda: None)  # what pymoo gives when every offspring is a duplicate
    assert searcher.suggest("t4") == Searcher.FINISHED


def test_constraints_make_trials_infeasible_not_failed() -> None:
    searcher = make(population_size=6, constraints=[("val/f2", "<=", 5.0), ("val/score", ">=", 0.3)])
    (batch,) = run(searcher, 1)
    told = searcher.algorithm.off
    expected = [zdt1(c)[1] > 5.0 or 1 - zdt1(c)[0] < 0.3 for _, c in batch]
    assert [not feasible for feasible in told.get("feas")] == expected and any(expected) and not all(expected)
    G = told.get("G")
    assert G[:, :2] == pytest.approx(np.array([[zdt1(c)[1] - 5.0, 0.3 - (1 - zdt1(c)[0])] for _, c in batch]))
    assert searcher.fail_reasons == {}


def test_a_missing_constrained_metric_fails_the_trial() -> None:
    searcher = make(population_size=4, constraints=[("val/dp_gap", "<=", 0.05)])
    run(searcher, 1)
    assert set(searcher.fail_reasons) == {"t0", "t1", "t2", "t3"}
    assert "val/dp_gap" in searcher.fail_reasons["t0"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "moead"}, "allowed: nsga2, nsga3, smsemoa, agemoea"),
        ({"population_size": 1}, "population_size"),
        ({"constraints": [("val/f2", "<", 1.0)]}, "constraints"),
        ({"objectives": [("val/f2", "min")]}, "objectives"),
        ({"objectives": [("val/f2", "minimize"), ("val/score", "max")]}, "allowed: max, min"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict, message: str) -> None:
    arguments = {"space": ZDT_SPACE, "objectives": ZDT_OBJECTIVES, "algorithm": "nsga2", "seed": 0, "population_size": 4}
    with pytest.raises(ValueError, match=message):
        PymooSearcher(**{**arguments, **kwargs})


# --- the algorithms search ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_improves_the_hypervolume_on_zdt1(algorithm: str) -> None:
    searcher = make(algorithm, seed=0, population_size=8)
    batches = run(searcher, 10)
    assert all(len(batch) == 8 for batch in batches) and searcher.fail_reasons == {}
    hv = HV(ref_point=np.array([1.1, 10.0]))
    front = [np.array([zdt1(config) for _, config in batch]) for batch in batches]
    assert hv(front[-1]) > 1.15 * hv(front[0])
    assert hv(np.vstack(front)) > hv(front[-1]) * 0.99 > 1.15 * hv(front[0])


def dtlz2(n_obj: int) -> Callable[[dict], dict]:
    """DTLZ2 with ``n_obj`` objectives over the space's variables (all minimized)."""

    def evaluate(config: dict) -> dict:
        x = list(config.values())
        g = sum((v - 0.5) ** 2 for v in x[n_obj - 1 :])
        values = []
        for j in range(n_obj):
            value = 1 + g
            for v in x[: n_obj - 1 - j]:
                value *= math.cos(v * math.pi / 2)
            if j > 0:
                value *= math.sin(x[n_obj - 1 - j] * math.pi / 2)
            values.append(value)
        return {f"val/f{j}": value for j, value in enumerate(values)}

    return evaluate


@pytest.mark.parametrize("n_obj", [3, 4])
def test_nsga3_searches_three_and_four_objectives(n_obj: int) -> None:
    space = {f"model.x{i}": Parameter(type="float", low=0.0, high=1.0) for i in range(n_obj + 2)}
    objectives = [(f"val/f{j}", "min") for j in range(n_obj)]
    searcher = PymooSearcher(space, objectives, "nsga3", seed=1, population_size=10)
    assert searcher.algorithm.ref_dirs.shape == (10, n_obj)
    evaluate = dtlz2(n_obj)
    batches = run(searcher, 8, evaluate)
    assert all(len(batch) == 10 for batch in batches)
    hv = HV(ref_point=np.full(n_obj, 2.5))
    values = [np.array([[evaluate(c)[k] for k, _ in objectives] for _, c in batch]) for batch in batches]
    assert hv(values[-1]) > hv(values[0])
    distance = [np.linalg.norm(v, axis=1).mean() - 1 for v in values]  # DTLZ2's front is the unit sphere
    assert distance[-1] < distance[0] - 0.05


# --- pickling and restoring ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pickle_works_fresh_and_mid_generation(algorithm: str) -> None:
    searcher = make(algorithm, population_size=4)
    fresh = pickle.loads(pickle.dumps(searcher))
    run(searcher, 2)
    batch = hand_out(searcher, 8)
    searcher.on_trial_complete(batch[0][0], {"val/score": math.nan})
    middle = pickle.loads(pickle.dumps(searcher))
    assert middle.fail_reasons == searcher.fail_reasons and middle.suggest("t9") == batch[1][1]
    assert hand_out(fresh, 0) == hand_out(make(algorithm, population_size=4), 0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_restored_searcher_suggests_exactly_what_the_original_would(algorithm: str, tmp_path) -> None:
    original, twin = make(algorithm, seed=3, population_size=4), make(algorithm, seed=3, population_size=4)
    assert run(original, 2) == run(twin, 2)
    half = hand_out(original, 8)
    assert half == hand_out(twin, 8)
    for trial_id, config in half[:2]:  # a generation half told when saved
        original.on_trial_complete(trial_id, zdt_result(config))
        twin.on_trial_complete(trial_id, zdt_result(config))
    path = tmp_path / "searcher.pkl"
    twin.save(str(path))
    restored = PymooSearcher(ZDT_SPACE, ZDT_OBJECTIVES, algorithm, seed=99, population_size=4)
    restored.restore(str(path))
    for trial_id, config in half[2:]:
        original.on_trial_complete(trial_id, zdt_result(config))
        restored.on_trial_complete(trial_id, zdt_result(config))
    assert run(original, 3) == run(restored, 3)


def test_set_search_properties_keeps_the_searchers_own() -> None:
    assert make().set_search_properties("other", "max", {}) is True


# --- inside Ray Tune -------------------------------------------------------------------------


def test_ray_tune_runs_the_searchers_suggestions(tmp_path) -> None:
    import ray
    from ray import tune

    # Token authentication stays as Ray 2.60 sets it: on for a new local cluster, with a
    # token made in ~/.ray/auth_token when none exists. Setting RAY_AUTH_MODE here, after
    # Ray has read its config, would leave the client and the new cluster disagreeing.

    def _trainable(config: dict) -> dict:  # local: Ray's workers cannot import this test module
        return {"val/f1": config["model.x"], "val/f2": (1 - config["model.x"]) ** 2 + config["model.y"]}

    space = {"model.x": Parameter(type="float", low=0.0, high=1.0), "model.y": Parameter(type="float", low=0.0, high=1.0)}
    objectives = [("val/f1", "min"), ("val/f2", "min")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            _trainable,
            tune_config=tune.TuneConfig(
                search_alg=PymooSearcher(space, objectives, "nsga2", seed=0, population_size=4),
                num_samples=8,
                max_concurrent_trials=2,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert results.num_errors == 0 and len(results) == 8
    reference = PymooSearcher(space, objectives, "nsga2", seed=0, population_size=4)
    expected = []
    for _ in range(2):  # the same two generations, told the trainable's values
        batch = hand_out(reference, len(expected))
        for trial_id, config in batch:
            reference.on_trial_complete(trial_id, _trainable(config))
        expected += [config for _, config in batch]
    ran = sorted(tuple(sorted(r.config.items())) for r in results)
    assert ran == sorted(tuple(sorted(c.items())) for c in expected)
    assert all(math.isfinite(r.metrics["val/f1"]) for r in results)
