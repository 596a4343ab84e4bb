"""A registered model as an MLflow pyfunc model: preprocessing replayed from JSON equals
scikit-learn's fitted pipeline; predictions equal a forward pass computed by hand; loading
unpickles nothing."""

from __future__ import annotations

import pickle

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ethicsweep.analysis.pyfunc import export_preprocessor, save_pyfunc, transform
from ethicsweep.data import prepare
from ethicsweep.data.loaders import Table
from ethicsweep.data.prepare import load
from ethicsweep.errors import DataError
from ethicsweep.spec import DataSpec, TrainConfig
from ethicsweep.trainables.checkpoint import MODEL_FILE, save_state
from ethicsweep.trainables.train import train


@pytest.fixture(scope="module")
def adult():
    spec = DataSpec(dataset="adult")
    table = load(spec)
    return prepare(spec, 0), table.frame[table.is_test]


def _toy_table() -> Table:
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, n).astype(float),
        "city": rng.choice(["north", "south", "east"], n),
        "sex": rng.choice(["F", "M"], n),
        "y": rng.integers(0, 2, n),
    })  # fmt: skip
    frame.loc[::7, "age"] = np.nan
    frame.loc[::11, "city"] = None
    return Table(name="toy", frame=frame, label="y", positive_label=1, default_sensitive=("sex",), sha256="0" * 64)


def test_replayed_preprocessing_equals_scikit_learn_on_adult_test_rows(adult):
    data, test = adult
    assert np.array_equal(transform(test, export_preprocessor(data.preprocessor)), data.test.X)


def test_missing_values_unseen_categories_and_extra_columns_as_scikit_learn_does():
    table = _toy_table()
    data = prepare(DataSpec(dataset="toy.csv", label="y", positive_label=1, sensitive=["sex"]), 0, table=table)
    new = pd.DataFrame({"age": [np.nan, 30.0, 200.0], "city": ["west", None, "north"], "unused": [1, 2, 3]})
    expected = data.preprocessor.transform(new[["age", "city"]]).astype(np.float32)
    assert np.allclose(transform(new, export_preprocessor(data.preprocessor)), expected, atol=1e-6)
    assert transform(new, export_preprocessor(data.preprocessor))[0, 1:].tolist() == [0.0] * 4  # "west": all zeros


def test_a_missing_column_is_named(adult):
    data, test = adult
    with pytest.raises(DataError, match=r"missing column\(s\) 'age'"):
        transform(test.drop(columns=["age"]), export_preprocessor(data.preprocessor))


def test_text_in_a_numeric_column_is_named(adult):
    data, test = adult
    bad = test.head(3).assign(age=["x", "31", "40"])
    with pytest.raises(DataError, match="column 'age' must hold numbers"):
        transform(bad, export_preprocessor(data.preprocessor))


@pytest.fixture(scope="module")
def saved(adult, tmp_path_factory):
    data, _ = adult
    config = TrainConfig.model_validate({"training": {"epochs": 1}, "model": {"hidden": 8, "abstain": "rule", "abstain_confidence": 0.7}})
    state = train(config, data)
    root = tmp_path_factory.mktemp("pyfunc")
    save_state(state, root / "checkpoint")
    save_pyfunc(root / "model", root / "checkpoint" / MODEL_FILE, config, data.preprocessor, {"note.txt": "hello"})
    return root / "model", root / "checkpoint" / MODEL_FILE


def test_pyfunc_predictions_equal_a_forward_pass_by_hand(adult, saved):
    data, test = adult
    path, weights_file = saved
    out = mlflow.pyfunc.load_model(str(path)).predict(test)
    weights = load_file(weights_file)
    x = torch.as_tensor(data.test.X, dtype=torch.float64)
    w = {k: v.double() for k, v in weights.items()}
    proba = torch.sigmoid(torch.relu(x @ w["0.weight"].T + w["0.bias"]) @ w["2.weight"].T + w["2.bias"]).ravel().numpy()
    assert list(out.columns) == ["probability", "decision", "abstain"] and list(out.index) == list(test.index)
    assert np.allclose(out["probability"], proba, atol=1e-6)
    assert np.array_equal(out["decision"], (proba >= 0.5).astype(int))
    assert np.array_equal(out["abstain"], np.maximum(proba, 1 - proba) < 0.7)
    assert (path / "data" / "ethicsweep" / "note.txt").read_text() == "hello"
    empty = mlflow.pyfunc.load_model(str(path)).predict(test.head(0))
    assert list(empty.columns) == ["probability", "decision", "abstain"] and len(empty) == 0


def test_loading_unpickles_nothing(saved, monkeypatch):
    path, _ = saved
    assert not [p for p in path.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt")]

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    mlflow.pyfunc.load_model(str(path))
