"""The MLflow model registry: each front model becomes a version of the sweep's registered model.

A version is an MLflow model that loads with ``mlflow.pyfunc.load_model`` and scores raw
columns (:mod:`ethicsweep.analysis.pyfunc`). Its files are plain data:
``model.safetensors`` (weights), ``train_config.json`` (rebuilds the network),
``preprocessor.json`` (the fitted preprocessing), ``spec.json`` (the whole sweep spec) and
``data.json`` (features, groups, data hash), under ``model/data/ethicsweep/`` of the
trial's run. Loading them never unpickles anything.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from ethicsweep.analysis.pyfunc import save_pyfunc
from ethicsweep.analysis.selection import Candidate, SelectionError
from ethicsweep.data import PreparedData
from ethicsweep.errors import EthicsweepError
from ethicsweep.spec import SweepSpec, TrainConfig
from ethicsweep.trainables.checkpoint import MODEL_FILE

MODEL_ARTIFACT_DIR = "model"


def save_model(path: Path, checkpoint: str | Path, config: TrainConfig, spec: SweepSpec, data: PreparedData) -> None:
    """Write the MLflow model of one front model at ``path`` (which must not exist)."""
    if data.preprocessor is None:
        raise ValueError("registering a model needs the fitted preprocessor: pass the driver's PreparedData")
    described = {
        "dataset": data.name,
        "data_sha256": data.sha256,
        "n_features": len(data.feature_names),
        "feature_names": list(data.feature_names),
        "sensitive": list(data.sensitive),
        "group_names": list(data.group_names),
        "min_group_size": data.min_group_size,
        "label": data.label,
        "positive_label": data.positive_label,
        "context_names": list(data.context_names),
    }
    extra = {"spec.json": spec.model_dump_json(indent=2), "data.json": json.dumps(described, indent=2, default=str)}
    save_pyfunc(path, Path(checkpoint) / MODEL_FILE, config, data.preprocessor, extra)


def _ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)


def _tag_value(value: Any) -> str:
    """A tag's text: floats in full (``repr`` round-trips exactly)."""
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


def constraint_tags(config: TrainConfig, row: pd.Series) -> dict[str, str]:
    """``constraint/<term>`` = ``met`` or ``broken`` for each constrained fairness term without
    group weights (its bound then applies to an exact metric): whether the validation value
    of that metric is within the bound (NaN: broken); ``constraints_met`` = whether all are
    (``true`` when there are none). Other constrained terms bound a training quantity that
    no exact metric equals, and are not tagged."""
    tags = {}
    for term in config.terms:
        metric = getattr(term, "metric", None)
        if term.mode == "constraint" and metric is not None and not term.group_weights:
            value = row.get(f"val/{metric}", float("nan"))
            tags[f"constraint/{term.key}"] = "met" if value <= term.bound else "broken"
    return {**tags, "constraints_met": str(all(v == "met" for v in tags.values())).lower()}


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
    objectives = ",".join(f"{o.metric}:{o.mode}" for o in spec.search.objectives)
    versions = []
    for k, ((_, row), config) in enumerate(zip(front.iterrows(), configs), start=1):
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / MODEL_ARTIFACT_DIR
            save_model(model, row["checkpoint"], config, spec, data)
            client.log_artifacts(row["run_id"], str(model), MODEL_ARTIFACT_DIR)
        source = f"{client.get_run(row['run_id']).info.artifact_uri}/{MODEL_ARTIFACT_DIR}"
        version_tags = {
            **tags,
            "front_rank": str(int(row["front_rank"])),
            "test_front_rank": str(int(row["test_front_rank"])),
            "trial_id": row["trial_id"],
            "objectives": objectives,
            **constraint_tags(config, row),
            "acceptable_risk_met": str(bool(row["acceptable_risk_met"])).lower(),
            **{key: _tag_value(row[key]) for key in row.index if key.startswith(("val/", "test/"))},
        }
        version = client.create_model_version(name, source=source, run_id=row["run_id"], tags=version_tags)
        client.set_registered_model_alias(name, f"candidate-{k}", version.version)
        versions.append(version.version)
    return versions


def front_candidates(client: MlflowClient, name: str) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The versions that hold a ``candidate-<k>`` alias of registered model ``name`` (the
    latest sweep's front), with their recorded metrics, and the sweep's objectives.

    Raises SelectionError when there is no such registered model or candidate."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise SelectionError(f"no registered model {name!r} in {client.tracking_uri}; run the sweep first") from None
    numbered = {alias: version for alias, version in model.aliases.items() if alias.startswith("candidate-")}
    if not numbered:
        raise SelectionError(f"registered model {name!r} has no candidate-<k> versions; run the sweep first")
    candidates, objectives = [], ""
    for alias, number in sorted(numbered.items(), key=lambda item: int(item[0].split("-", 1)[1])):
        version = client.get_model_version(name, number)
        metrics = {k: float(v) for k, v in version.tags.items() if k.startswith(("val/", "test/"))}
        candidates.append(Candidate(version=str(version.version), number=int(alias.split("-", 1)[1]), metrics=metrics))
        objectives = version.tags.get("objectives", objectives)
    pairs = [tuple(item.split(":")) for item in objectives.split(",") if item]
    if not pairs:
        raise SelectionError(f"registered model {name!r}: its versions carry no 'objectives' tag (registered by an older ethicsweep)")
    return candidates, pairs


def resolve_version(client: MlflowClient, reference: str) -> ModelVersion:
    """The registered version that ``reference`` names: ``NAME@ALIAS`` or ``NAME/VERSION``,
    optionally with a ``models:/`` prefix. Raises EthicsweepError naming what is wrong."""
    text = reference.removeprefix("models:/")
    name, sep, which = text.partition("@") if "@" in text else text.rpartition("/")
    if not name or not which:
        raise EthicsweepError(f"MODEL {reference!r}: write NAME@ALIAS or NAME/VERSION, e.g. adult-demo@champion")
    try:
        return client.get_model_version_by_alias(name, which) if sep == "@" else client.get_model_version(name, which)
    except MlflowException:
        raise EthicsweepError(f"MODEL {reference!r}: no such registered version in {client.tracking_uri}") from None


def download_model_files(client: MlflowClient, version: ModelVersion, directory: str | Path) -> Path:
    """Download a version's data files (weights, configs, spec; see the module docstring)
    into ``directory``; the path of the folder that holds them."""
    return Path(client.download_artifacts(version.run_id, f"{MODEL_ARTIFACT_DIR}/data/ethicsweep", str(directory)))
