"""A registered model as an ``mlflow.pyfunc`` model that scores raw columns.

A version's MLflow model names this module as its ``loader_module``: MLflow imports it and
calls :func:`_load_pyfunc` on the version's data directory, which holds plain files only —
``model.safetensors`` (weights), ``train_config.json`` (rebuilds the network and its
decision rule) and ``preprocessor.json`` (the fitted preprocessing as numbers and category
lists). Nothing is unpickled, so loading a version runs no code that came with it.

The preprocessing replays the scikit-learn pipeline that :mod:`ethicsweep.data.prepare`
fits on the training split: numeric columns median-imputed then standardized (a scale of
0 counts as 1, as scikit-learn does), categorical columns one-hot encoded with a missing
value as the category ``"missing"`` and an unseen value as all zeros.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer

import ethicsweep
from ethicsweep.errors import DataError
from ethicsweep.spec import TrainConfig
from ethicsweep.trainables.checkpoint import MODEL_FILE, load_model
from ethicsweep.trainables.models import abstain_mask, predict, sigmoid

PREPROCESSOR_FILE, CONFIG_FILE = "preprocessor.json", "train_config.json"
MISSING = "missing"  # the category a missing categorical value becomes (as in prepare)


def export_preprocessor(preprocessor: ColumnTransformer) -> dict[str, Any]:
    """The fitted preprocessing of :func:`ethicsweep.data.prepare` as JSON-ready numbers:
    per numeric column its median, mean and scale; per categorical column its categories;
    and the output feature names, in order."""
    numeric: dict[str, dict[str, float]] = {}
    categorical: dict[str, list[Any]] = {}
    for name, pipeline, columns in preprocessor.transformers_:
        if name == "numeric" and len(columns):
            imputer, scaler = pipeline.steps[0][1], pipeline.steps[1][1]
            for i, column in enumerate(columns):
                numeric[column] = {"median": float(imputer.statistics_[i]), "mean": float(scaler.mean_[i]), "scale": float(scaler.scale_[i])}
        elif name == "categorical" and len(columns):
            encoder = pipeline.steps[1][1]
            categorical.update({column: cats.tolist() for column, cats in zip(columns, encoder.categories_)})
    return {"numeric": numeric, "categorical": categorical, "feature_names": list(preprocessor.get_feature_names_out())}


def transform(frame: pd.DataFrame, fitted: dict[str, Any]) -> np.ndarray:
    """Model features (float32) from raw columns; extra columns are ignored.

    Raises DataError naming the columns that are missing or hold non-numbers where numbers
    are expected."""
    needed = [*fitted["numeric"], *fitted["categorical"]]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise DataError(f"input: missing column(s) {', '.join(map(repr, absent))}; the model reads {', '.join(map(repr, needed))}")
    parts = []
    for column, stats in fitted["numeric"].items():
        try:
            values = pd.to_numeric(frame[column], errors="raise").to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"input: column {column!r} must hold numbers ({exc})") from None
        values = np.where(np.isnan(values), stats["median"], values)
        parts.append(((values - stats["mean"]) / (stats["scale"] or 1.0))[:, None])
    for column, categories in fitted["categorical"].items():
        values = frame[column].astype(object).where(frame[column].notna(), MISSING)
        codes = pd.Categorical(values, categories=categories).codes
        parts.append((codes[:, None] == np.arange(len(categories))[None, :]).astype(np.float64))
    return np.hstack(parts).astype(np.float32) if parts else np.zeros((len(frame), 0), np.float32)


class FrontModel:
    """A front model over raw columns: ``predict(frame)`` returns ``probability`` (P(y=1)),
    ``decision`` (1[p >= threshold]) and, when the model abstains, ``abstain`` (True: route
    the row to a person; its decision is still shown)."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.config = TrainConfig.model_validate_json((directory / CONFIG_FILE).read_text())
        self.preprocessing = json.loads((directory / PREPROCESSOR_FILE).read_text())
        n_features = len(self.preprocessing["feature_names"])
        self.model = load_model(directory / MODEL_FILE, self.config.model, n_features)

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Score ``model_input`` (MLflow's loader-module protocol; ``params`` are not used)."""
        if not isinstance(model_input, pd.DataFrame):
            raise DataError(f"input: a pandas DataFrame of raw columns is needed, not {type(model_input).__name__}")
        X = torch.as_tensor(transform(model_input, self.preprocessing))
        logits, abstain_logits = predict(self.model, X)
        proba = sigmoid(logits)
        out = pd.DataFrame({"probability": proba, "decision": (proba >= self.config.model.threshold).astype(np.int64)}, index=model_input.index)
        abstain = abstain_mask(self.config.model, proba, sigmoid(abstain_logits) if abstain_logits is not None else None)
        if abstain is not None:
            out["abstain"] = abstain
        return out


def _load_pyfunc(data_path: str) -> FrontModel:
    """MLflow's entry point for ``loader_module``: the model in ``data_path``."""
    return FrontModel(data_path)


def save_pyfunc(path: Path, weights: Path, config: TrainConfig, preprocessor: ColumnTransformer, extra: dict[str, str]) -> None:
    """Write an MLflow model at ``path`` (which must not exist) whose data directory holds the
    weights, the training config, the preprocessing and ``extra`` files (name → text)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ethicsweep"
        data.mkdir()
        (data / MODEL_FILE).write_bytes(Path(weights).read_bytes())
        (data / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
        (data / PREPROCESSOR_FILE).write_text(json.dumps(export_preprocessor(preprocessor), indent=2))
        for name, text in extra.items():
            (data / name).write_text(text)
        mlflow.pyfunc.save_model(
            path, loader_module=__name__, data_path=str(data), pip_requirements=[f"ethicsweep=={ethicsweep.__version__}"]
        )
