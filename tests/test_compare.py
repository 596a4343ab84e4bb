"""Comparing registered fronts: hypervolume at a common reference point, by hand, on a real
(sqlite) MLflow registry built for the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ethicsweep.analysis.compare import common_reference, hypervolumes, load_front, write_comparison
from ethicsweep.errors import EthicsweepError

OBJECTIVES = "accuracy:max,dp_gap:min"


def _register(client: MlflowClient, name: str, points: list[tuple[float, float]], reference: list[float] | None,
              objectives: str = OBJECTIVES) -> None:  # fmt: skip
    """A registered model whose candidate-<k> versions hold (accuracy, dp_gap) on both splits."""
    experiment = client.create_experiment(name)
    client.create_registered_model(name)
    for k, (accuracy, gap) in enumerate(points, start=1):
        run = client.create_run(experiment)
        tags = {"objectives": objectives, "val/accuracy": str(accuracy), "val/dp_gap": str(gap),
                "test/accuracy": str(accuracy - 0.01), "test/dp_gap": str(gap)}  # fmt: skip
        if reference is not None:
            tags |= {"hypervolume_reference/val": json.dumps(reference), "hypervolume_reference/test": json.dumps(reference)}
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags)
        client.set_registered_model_alias(name, f"candidate-{k}", version.version)


@pytest.fixture()
def client(tmp_path: Path) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    _register(client, "a", [(0.85, 0.10), (0.80, 0.02)], [0.76, 0.2])
    _register(client, "b", [(0.84, 0.05)], [0.75, 0.25])
    return client


def test_hypervolumes_at_the_worst_recorded_reference(client: MlflowClient) -> None:
    fronts = [load_front(client, "a"), load_front(client, "b")]
    # common reference: accuracy min(0.76, 0.75) = 0.75, dp_gap max(0.2, 0.25) = 0.25
    assert common_reference(fronts, "val") == [0.75, 0.25]
    table = hypervolumes(fronts).set_index("sweep")
    # a, validation: (0.85-0.75)(0.25-0.10) + (0.80-0.75)(0.10-0.02) = 0.015 + 0.004
    assert table.loc["a", "hypervolume (val)"] == pytest.approx(0.019)
    # b, validation: (0.84-0.75)(0.25-0.05) = 0.018; test: accuracy 0.83: 0.08 * 0.2 = 0.016
    assert table.loc["b", "hypervolume (val)"] == pytest.approx(0.018)
    assert table.loc["b", "hypervolume (test)"] == pytest.approx(0.016)
    assert list(table["front models"]) == [2, 1]


def test_a_given_reference_wins_and_the_page_is_written(client: MlflowClient, tmp_path: Path) -> None:
    fronts = [load_front(client, "a"), load_front(client, "b")]
    table = hypervolumes(fronts, {"accuracy": 0.8}).set_index("sweep")
    # a: only (0.85, 0.10) beats accuracy 0.8: (0.05)(0.25-0.10) = 0.0075
    assert table.loc["a", "hypervolume (val)"] == pytest.approx(0.0075)
    page = write_comparison(tmp_path / "c.html", fronts, table.reset_index(), {"accuracy": 0.8}).read_text()
    assert "accuracy 0.8, dp_gap 0.25" in page and "Plotly.newPlot" in page and "<script src=" not in page


def test_different_objectives_or_no_recorded_reference_are_errors(client: MlflowClient) -> None:
    _register(client, "c", [(0.8, 0.1)], [0.76, 0.2], objectives="accuracy:max,eo_gap:min")
    with pytest.raises(EthicsweepError, match="objectives .* differ"):
        hypervolumes([load_front(client, "a"), load_front(client, "c")])
    _register(client, "old", [(0.8, 0.1)], None)
    with pytest.raises(EthicsweepError, match="--reference accuracy=VALUE,dp_gap=VALUE"):
        hypervolumes([load_front(client, "a"), load_front(client, "old")])
    assert hypervolumes([load_front(client, "a"), load_front(client, "old")], {"accuracy": 0.7, "dp_gap": 0.3}) is not None
