"""From a loaded table to model-ready arrays: roles checked, groups encoded, seeded splits
stratified on group × label, preprocessing fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ethicsweep.data.groups import encode_groups
from ethicsweep.data.loaders import BUNDLED, Table, load_bundled, load_table
from ethicsweep.errors import DataError
from ethicsweep.spec import DataSpec

#: Feature values beyond this magnitude are refused: they overflow float32 training.
MAX_ABS_FEATURE = 1e30


@dataclass(frozen=True)
class Split:
    """One split as arrays: features (float32), labels (0/1 float32), group codes (int64),
    and context codes (int64) when the spec names a context column."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    context: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class PreparedData:
    """Train, validation and (on the driver only) test splits, with what describes them."""

    name: str
    train: Split
    validation: Split
    test: Split | None
    group_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    min_group_size: int
    sha256: str
    sensitive: tuple[str, ...]
    preprocessor: ColumnTransformer | None = None
    context_names: tuple[str, ...] = ()
    label: str = ""
    positive_label: object = None

    def for_workers(self) -> PreparedData:
        """A copy without the test split and the fitted preprocessor: what trials may see."""
        return replace(self, test=None, preprocessor=None)


def load(spec: DataSpec) -> Table:
    """Load the table a data spec names (bundled or a file)."""
    if spec.dataset in BUNDLED:
        table = load_bundled(spec.dataset)
        for field in ("label", "positive_label"):
            given = getattr(spec, field)
            if given is not None and str(given) != str(getattr(table, field)):
                raise DataError(f"data.{field}: the bundled {spec.dataset} data set has {field} {getattr(table, field)!r}, got {given!r}; leave it out")
        return table
    path = Path(spec.dataset)
    if not path.exists():
        raise DataError(f"data.dataset: {spec.dataset!r} is neither a bundled data set ({', '.join(BUNDLED)}) nor an existing file")
    if path.is_dir():
        raise DataError(f"data.dataset: {spec.dataset!r} is a directory; give a .csv, .csv.gz or .parquet file")
    if spec.label is None or spec.positive_label is None:
        raise DataError("data.label and data.positive_label: required for a data file (which column is the label, and which of its values is y = 1)")
    return load_table(path, spec.label, spec.positive_label)


def _stratified_split(index: np.ndarray, strata: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (rest, held out), stratified on ``strata``; strata too small to
    split are pooled so that stratification never fails on a rare group × label cell."""
    labels = strata[index].astype(object)
    counts = pd.Series(labels).value_counts()
    rare = counts.index[counts < 2]
    if len(rare):
        labels = np.where(np.isin(labels, rare), "__rare__", labels)
        if (labels == "__rare__").sum() < 2:
            labels = np.where(labels == "__rare__", counts.index[0], labels)
    try:
        return train_test_split(index, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise DataError(f"data: cannot split {len(index)} rows with a {fraction} held-out fraction: {exc}") from None


def _check_columns(table: Table, spec: DataSpec, sensitive: list[str]) -> list[str]:
    frame = table.frame
    for field, columns in (("sensitive", sensitive), ("drop", spec.drop), ("context", [spec.context] if spec.context else [])):
        for column in columns:
            if column not in frame.columns:
                raise DataError(f"data.{field}: column {column!r} is not in the data; columns: {', '.join(map(str, frame.columns))}")
    if table.label in sensitive:
        raise DataError(f"data.sensitive: {table.label!r} is the label column; choose other columns")
    for column in spec.bins:
        if column not in sensitive:
            raise DataError(f"data.bins.{column}: {column!r} is not a sensitive column; bins apply to data.sensitive ({', '.join(sensitive)})")
    excluded = {table.label, *spec.drop} | (set() if spec.sensitive_as_feature else set(sensitive))
    features = [c for c in frame.columns if c not in excluded]
    if not features:
        raise DataError("data: no feature columns are left after removing the label, the sensitive columns and data.drop")
    return features


def _labels(table: Table) -> np.ndarray:
    column = table.frame[table.label]
    if column.isna().any():
        raise DataError(f"data.label: column {table.label!r} has {int(column.isna().sum())} missing values; remove those rows")
    values = column.unique()
    if len(values) != 2:
        shown = ", ".join(repr(v) for v in values[:10])
        kind = "one class" if len(values) == 1 else f"{len(values)} classes"
        raise DataError(f"data.label: column {table.label!r} has {kind} ({shown}); a binary label with exactly two values is needed")
    return (column == table.positive_label).to_numpy().astype(np.float32)


def _preprocessor(frame: pd.DataFrame, features: list[str]) -> ColumnTransformer:
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    categorical = [c for c in features if c not in numeric]
    return ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )


def _check_finite(frame: pd.DataFrame, features: list[str]) -> None:
    for column in features:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            finite = values.dropna().to_numpy(dtype=np.float64)
            bad = ~np.isfinite(finite) | (np.abs(finite) > MAX_ABS_FEATURE)
            if bad.any():
                raise DataError(f"data: column {column!r} holds {float(finite[bad][0])}; feature values must be finite and within ±{MAX_ABS_FEATURE:g}")


def prepare(spec: DataSpec, seed: int, table: Table | None = None) -> PreparedData:
    """Load (unless ``table`` is given), check, split and preprocess the data of ``spec``.

    Test rows are the table's official test split when it has one, else a seeded stratified
    ``spec.test_fraction``; validation is a seeded stratified ``spec.validation_fraction``
    of the rest. Preprocessing (median-imputed standardized numbers, one-hot categories with
    missing as its own category) is fitted on the training rows only.
    """
    table = table if table is not None else load(spec)
    sensitive = list(spec.sensitive or table.default_sensitive)
    if not sensitive:
        raise DataError("data.sensitive: give at least one sensitive column")
    features = _check_columns(table, spec, sensitive)
    frame = table.frame
    y = _labels(table)
    groups = encode_groups(frame, sensitive, spec.bins, spec.missing)
    if len(groups.names) < 2:
        raise DataError(
            f"data.sensitive: {', '.join(sensitive)} take a single value in the data ({groups.names[0]}); "
            "fairness needs at least two groups: choose a column with two or more values"
        )
    _check_finite(frame, features)
    strata = groups.codes * 2 + y.astype(np.int64)
    index = np.arange(len(frame))
    if table.is_test is not None:
        rest, test_idx = index[~table.is_test], index[table.is_test]
    else:
        rest, test_idx = _stratified_split(index, strata, spec.test_fraction, seed)
    train_idx, val_idx = _stratified_split(rest, strata, spec.validation_fraction, seed)

    empty = [c for c in features if frame.iloc[train_idx][c].isna().all()]
    if empty:
        raise DataError(f"data: column {empty[0]!r} has no values in the training split; leave it out with data.drop")
    preprocessor = _preprocessor(frame, features)
    preprocessor.fit(frame.iloc[train_idx][features])

    context_names, row_contexts = context_codes(frame, spec.context)

    def split(rows: np.ndarray) -> Split:
        X = preprocessor.transform(frame.iloc[rows][features]).astype(np.float32)
        context = row_contexts[rows] if row_contexts is not None else None
        return Split(X=X, y=y[rows], groups=groups.codes[rows], context=context)

    return PreparedData(
        name=table.name,
        train=split(train_idx),
        validation=split(val_idx),
        test=split(test_idx),
        group_names=groups.names,
        feature_names=tuple(preprocessor.get_feature_names_out()),
        min_group_size=spec.min_group_size,
        sha256=table.sha256,
        sensitive=tuple(sensitive),
        preprocessor=preprocessor,
        context_names=context_names,
        label=table.label,
        positive_label=table.positive_label,
    )


def context_codes(frame: pd.DataFrame, column: str | None) -> tuple[tuple[str, ...], np.ndarray | None]:
    """Codes of the context column's values (a missing value is the context ``missing``)."""
    if column is None:
        return (), None
    values = frame[column].astype(object).where(frame[column].notna(), "missing").astype(str).to_numpy()
    names, codes = np.unique(values, return_inverse=True)
    return tuple(str(n) for n in names), codes.astype(np.int64)
