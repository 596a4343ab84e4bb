"""Sweep spec validation: every error is a one-line SpecError naming the field and the bad
value; dotted-path parameters; a spec hash that ignores key order."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ethicsweep.errors import EthicsweepError, SpecError
from ethicsweep.spec import SweepSpec, TrainConfig, load_spec, parse_spec


def spec_error(document) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(document)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_minimal_spec_parses():
    spec = parse_spec({"name": "demo"})
    assert isinstance(spec, SweepSpec)
    assert spec.name == "demo"
    assert spec.data.dataset == "adult"
    assert [o.metric for o in spec.search.objectives] == ["accuracy", "dp_gap"]


def test_spec_error_is_ethicsweep_error():
    assert issubclass(SpecError, EthicsweepError)


def test_unknown_top_level_field():
    message = spec_error({"name": "x", "colour": "blue"})
    assert "'colour'" in message
    assert "unknown field" in message


def test_unknown_nested_field():
    message = spec_error({"name": "x", "data": {"datset": "adult"}})
    assert "data.datset" in message


def test_negative_weight():
    message = spec_error({"name": "x", "train": {"terms": [{"kind": "demographic_parity", "weight": -1.5}]}})
    assert "train.terms.0.weight" in message
    assert "-1.5" in message


def test_epochs_zero():
    message = spec_error({"name": "x", "train": {"training": {"epochs": 0}}})
    assert "train.training.epochs" in message
    assert "(got 0)" in message


def test_unknown_objective_metric():
    message = spec_error({"name": "x", "search": {"objectives": [{"metric": "fairness"}]}})
    assert "search.objectives.0.metric" in message
    assert "'fairness'" in message
    assert "dp_gap" in message  # what is allowed


def test_unknown_term_kind():
    message = spec_error({"name": "x", "train": {"terms": [{"kind": "parity"}]}})
    assert "train.terms.0.kind" in message
    assert "'parity'" in message


def test_space_path_naming_no_parameter():
    message = spec_error({"name": "x", "search": {"space": {"training.momentum": {"type": "float", "low": 0.1, "high": 0.9}}}})
    assert "search.space" in message
    assert "search.space.training.momentum" in message


def test_space_path_error_attributed_to_its_field():
    """DESIGN.md: every error names the field. A bad search.space path is reported as
    "field '(top level)' ... (got a mapping)" instead of naming search.space.<path>."""
    message = spec_error({"name": "x", "search": {"space": {"training.momentum": {"type": "float", "low": 0.1, "high": 0.9}}}})
    assert "field '(top level)'" not in message


def test_space_path_naming_absent_term():
    message = spec_error({"name": "x", "search": {"space": {"terms.dp.weight": {"type": "float", "low": 0.0, "high": 1.0}}}})
    assert "search.space" in message
    assert "search.space.terms.dp.weight" in message


def test_space_value_not_allowed_for_parameter():
    # model.hidden must be >= 1: a range starting at 0 is refused
    message = spec_error({"name": "x", "search": {"space": {"model.hidden": {"type": "int", "low": 0, "high": 8}}}})
    assert "search.space.model.hidden" in message
    assert "0" in message


def test_categorical_without_choices():
    message = spec_error({"name": "x", "search": {"space": {"model.hidden": {"type": "categorical"}}}})
    assert "search.space.model.hidden" in message
    assert "choices" in message


def test_log_range_with_low_zero():
    message = spec_error({"name": "x", "search": {"space": {"training.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}}})
    assert "search.space.training.lr" in message
    assert "low > 0" in message
    assert "got 0" in message


def test_log_range_with_negative_low():
    message = spec_error({"name": "x", "search": {"space": {"training.lr": {"type": "float", "low": -1, "high": 0.1, "log": True}}}})
    assert "-1" in message


def test_range_low_not_below_high():
    message = spec_error({"name": "x", "search": {"space": {"training.lr": {"type": "float", "low": 0.5, "high": 0.1}}}})
    assert "search.space.training.lr" in message
    assert "0.5" in message


def test_missing_name():
    message = spec_error({})
    assert "'name'" in message
    assert "required" in message


def test_bad_name():
    message = spec_error({"name": "has space"})
    assert "'name'" in message
    assert "'has space'" in message


def test_bins_not_increasing():
    message = spec_error({"name": "x", "data": {"bins": {"age": [0, 50, 25]}}})
    assert "data.bins" in message
    assert "age" in message


def test_duplicate_term_names():
    message = spec_error({"name": "x", "train": {"terms": [{"kind": "demographic_parity"}, {"kind": "demographic_parity"}]}})
    assert "'demographic_parity'" in message


def test_train_seed_differing_from_sweep_seed():
    message = spec_error({"name": "x", "seed": 1, "train": {"seed": 2}})
    assert "train.seed" in message
    assert "2" in message


def test_train_seed_follows_sweep_seed():
    assert parse_spec({"name": "x", "seed": 5}).train.seed == 5


@pytest.mark.parametrize(("document", "kind"), [([1, 2], "list"), ("text", "str"), (None, "NoneType"), (3, "int")])
def test_not_a_mapping(document, kind):
    message = spec_error(document)
    assert "mapping" in message
    assert kind in message


# --------------------------------------------------------------------------- load_spec


def load_error(path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_load_spec_valid(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: demo\ntrain:\n  training:\n    epochs: 3\n")
    spec = load_spec(path)
    assert spec.train.training.epochs == 3


def test_load_spec_reads_exponents_without_a_dot_as_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; a fresh-install tester had lr: 1e-3 refused."""
    path = tmp_path / "s.yaml"
    path.write_text("name: demo\ntracking_wait_s: 3e2\ntrain:\n  training:\n    lr: 1e-3\n  terms:\n    - {kind: demographic_parity, weight: -2E+0}\n")
    message = load_error(path)  # the weight must be >= 0: read as the number -2.0
    assert "weight" in message and "-2.0" in message, message
    path.write_text("name: demo\ntracking_wait_s: 3e2\ntrain:\n  training:\n    lr: 1e-3\n    epochs: 1_0\n")
    spec = load_spec(path)
    assert spec.train.training.lr == 0.001 and spec.tracking_wait_s == 300.0 and spec.train.training.epochs == 10


def test_load_spec_yaml_list(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- name: demo\n- name: other\n")
    message = load_error(path)
    assert "list.yaml" in message
    assert "mapping" in message


def test_load_spec_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert "mapping" in load_error(path)


def test_load_spec_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: demo\ntrain: [unclosed\n")
    message = load_error(path)
    assert "bad.yaml" in message
    assert "not valid YAML" in message
    assert "line" in message


def test_load_spec_tab_indentation(tmp_path):
    path = tmp_path / "tabs.yaml"
    path.write_text("name: demo\ntrain:\n\ttraining: {}\n")
    assert "not valid YAML" in load_error(path)


def test_load_spec_missing_file(tmp_path):
    message = load_error(tmp_path / "nope.yaml")
    assert "nope.yaml" in message
    assert "does not exist" in message


def test_load_spec_field_error_names_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: demo\ntrain:\n  training:\n    epochs: 0\n")
    message = load_error(path)
    assert message.startswith("s.yaml:")
    assert "train.training.epochs" in message


def test_load_spec_not_utf8(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: d\xe9mo\n".encode("latin-1"))
    assert "UTF-8" in load_error(path)


# --------------------------------------------------------------------------- with_params


def config() -> TrainConfig:
    return TrainConfig.model_validate(
        {"terms": [{"kind": "demographic_parity", "name": "dp", "weight": 1.0}, {"kind": "equalized_odds", "weight": 0.5}]}
    )


def test_with_params_term_weight_by_name():
    updated = config().with_params({"terms.dp.weight": 2.5})
    assert updated.terms[0].weight == 2.5
    assert updated.terms[1].weight == 0.5


def test_with_params_term_weight_by_kind():
    updated = config().with_params({"terms.equalized_odds.weight": 3.0})
    assert updated.terms[1].weight == 3.0


def test_with_params_training_lr():
    assert config().with_params({"training.lr": 0.01}).training.lr == 0.01


def test_with_params_model_hidden():
    assert config().with_params({"model.hidden": 128}).model.hidden == 128


def test_with_params_several_and_original_unchanged():
    original = config()
    updated = original.with_params({"training.lr": 0.05, "model.hidden": 16, "terms.dp.weight": 0.0})
    assert (updated.training.lr, updated.model.hidden, updated.terms[0].weight) == (0.05, 16, 0.0)
    assert (original.training.lr, original.model.hidden, original.terms[0].weight) == (1e-3, 64, 1.0)


@pytest.mark.parametrize("path", ["training.momentum", "terms.nope.weight", "optimizer.lr", "model.hidden.size"])
def test_with_params_unknown_path(path):
    with pytest.raises(KeyError):
        config().with_params({path: 1})


def test_with_params_validates_value():
    with pytest.raises(ValidationError):
        config().with_params({"terms.dp.weight": -1.0})


# --------------------------------------------------------------------------- spec_hash

DOC_A = {
    "name": "s",
    "seed": 1,
    "data": {"dataset": "german", "sensitive": ["sex"]},
    "train": {"training": {"epochs": 2, "lr": 0.01}, "terms": [{"kind": "demographic_parity", "weight": 0.5}]},
}
DOC_B = {
    "train": {"terms": [{"weight": 0.5, "kind": "demographic_parity"}], "training": {"lr": 0.01, "epochs": 2}},
    "data": {"sensitive": ["sex"], "dataset": "german"},
    "seed": 1,
    "name": "s",
}


def test_spec_hash_stable_under_key_reordering():
    assert parse_spec(DOC_A).spec_hash == parse_spec(DOC_B).spec_hash


def test_spec_hash_stable_across_calls():
    assert parse_spec(DOC_A).spec_hash == parse_spec(DOC_A).spec_hash


def test_spec_hash_is_sha256_hex():
    digest = parse_spec(DOC_A).spec_hash
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_spec_hash_changes_with_a_value():
    changed = {**DOC_A, "seed": 2}
    assert parse_spec(changed).spec_hash != parse_spec(DOC_A).spec_hash


def test_spec_hash_same_for_explicit_defaults():
    assert parse_spec({"name": "s"}).spec_hash == parse_spec({"name": "s", "seed": 0, "data": {"dataset": "adult"}}).spec_hash


def test_spec_hash_same_from_yaml_with_other_order(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "train:\n  terms:\n    - weight: 0.5\n      kind: demographic_parity\n  training:\n    lr: 0.01\n    epochs: 2\n"
        "data:\n  sensitive: [sex]\n  dataset: german\nseed: 1\nname: s\n"
    )
    assert load_spec(path).spec_hash == parse_spec(DOC_A).spec_hash


def test_spec_hash_leaves_out_where_results_go_and_how_long_to_wait_for_them():
    # --resume compares hashes: pointing a resumed sweep at another server or a longer wait is allowed
    moved = {**DOC_A, "output_dir": "elsewhere", "tracking_uri": "http://mlflow:5000", "storage_path": "s3://b/p", "tracking_wait_s": 900}
    assert parse_spec(moved).spec_hash == parse_spec(DOC_A).spec_hash


def test_search_reuse_actors_defaults_on_and_takes_a_boolean_only():
    assert parse_spec(DOC_A).search.reuse_actors is True
    assert parse_spec({**DOC_A, "search": {"reuse_actors": False, "space": {"training.lr": {"type": "float", "low": 0.001, "high": 0.1}}}}).search.reuse_actors is False
    with pytest.raises(SpecError) as error:
        parse_spec({**DOC_A, "search": {"reuse_actors": "sometimes", "space": {"training.lr": {"type": "float", "low": 0.001, "high": 0.1}}}})
    message = str(error.value)
    assert "'search.reuse_actors'" in message and "'sometimes'" in message and message.endswith("allowed: true or false")
