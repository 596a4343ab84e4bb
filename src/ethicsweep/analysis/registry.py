"""The MLflow model registry: each front model becomes a version of the sweep's registered model.

A version's files are plain data: ``model.safetensors`` (weights), ``train_config.json``
(rebuilds the network), ``spec.json`` (the whole sweep spec) and ``data.json`` (features,
groups, data hash). Loading them never unpickles anything.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ethicsweep.data import PreparedData
from ethicsweep.spec import SweepSpec, TrainConfig
from ethicsweep.trainables.checkpoint import MODEL_FILE

MODEL_ARTIFACT_DIR = "model"


def write_bundle(directory: Path, checkpoint: str | Path, config: TrainConfig, spec: SweepSpec, data: PreparedData) -> None:
    """Write the files that rebuild one model into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(checkpoint) / MODEL_FILE, directory / MODEL_FILE)
    (directory / "train_config.json").write_text(config.model_dump_json(indent=2))
    (directory / "spec.json").write_text(spec.model_dump_json(indent=2))
    described = {
        "dataset": data.name,
        "data_sha256": data.sha256,
        "n_features": len(data.feature_names),
        "feature_names": list(data.feature_names),
        "sensitive": list(data.sensitive),
        "group_names": list(data.group_names),
        "min_group_size": data.min_group_size,
    }
    (directory / "data.json").write_text(json.dumps(described, indent=2))


def _ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)


def _tag_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def register_front(
    client: MlflowClient,
    spec: SweepSpec,
    data: PreparedData,
    front: pd.DataFrame,
    configs: list[TrainConfig],
    tags: dict[str, str],
) -> list[str]:
    """Register each row of ``front`` (in order) as a model version; return the versions.

    Row k (from 1) gets the alias ``candidate-k``; ``candidate-*`` aliases of an earlier
    sweep of the same name are removed first, so every candidate alias names this sweep. Version tags carry every ``val/*`` and
    ``test/*`` metric of the row, its front rank, its trial, whether it meets the
    governance block's acceptable risk, and ``tags`` (provenance and governance).
    """
    name = spec.name
    _ensure_registered_model(client, name, f"Pareto-front models of the ethicsweep sweep {name!r}")
    for alias in client.get_registered_model(name).aliases:  # an earlier sweep's candidates
        if alias.startswith("candidate-"):
            client.delete_registered_model_alias(name, alias)
    versions = []
    for k, ((_, row), config) in enumerate(zip(front.iterrows(), configs), start=1):
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / MODEL_ARTIFACT_DIR
            write_bundle(bundle, row["checkpoint"], config, spec, data)
            client.log_artifacts(row["run_id"], str(bundle), MODEL_ARTIFACT_DIR)
        source = f"{client.get_run(row['run_id']).info.artifact_uri}/{MODEL_ARTIFACT_DIR}"
        version_tags = {
            **tags,
            "front_rank": str(int(row["front_rank"])),
            "trial_id": row["trial_id"],
            "constraints_met": "true",
            "acceptable_risk_met": str(bool(row["acceptable_risk_met"])).lower(),
            **{key: _tag_value(row[key]) for key in row.index if key.startswith(("val/", "test/"))},
        }
        version = client.create_model_version(name, source=source, run_id=row["run_id"], tags=version_tags)
        client.set_registered_model_alias(name, f"candidate-{k}", version.version)
        versions.append(version.version)
    return versions
