"""Loaders for the bundled data sets (Adult, COMPAS, German credit) and for a user's CSV/Parquet file.

A loader returns a :class:`Table`: the raw rows with their column roles, before any split
or preprocessing. Nothing here is fitted to data.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ethicsweep.errors import DataError

BUNDLED = ("adult", "compas", "german")


@dataclass(frozen=True)
class Table:
    """A labelled table as loaded.

    ``frame`` holds every row; ``is_test`` marks the rows of an official test split (Adult),
    or is ``None`` when the data set has none and the test split is drawn at random.
    ``sha256`` is the SHA-256 of the source bytes (decompressed), joined in file order.
    """

    name: str
    frame: pd.DataFrame
    label: str
    positive_label: object
    default_sensitive: tuple[str, ...]
    sha256: str
    is_test: np.ndarray | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _bundled_bytes(filename: str) -> bytes:
    raw = resources.files("ethicsweep.data.bundled").joinpath(filename).read_bytes()
    return gzip.decompress(raw) if filename.endswith(".gz") else raw


def _sha256(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(hashlib.sha256(chunk).digest())
    return digest.hexdigest() if len(chunks) > 1 else hashlib.sha256(chunks[0]).hexdigest()


ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
    "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
    "hours_per_week", "native_country", "income",
]  # fmt: skip


def _read_adult(raw: bytes, skip_marker: bool) -> pd.DataFrame:
    frame = pd.read_csv(
        io.BytesIO(raw),
        header=None,
        names=ADULT_COLUMNS,
        skipinitialspace=True,
        na_values=["?"],
        skiprows=1 if skip_marker else 0,
        skip_blank_lines=True,
    )
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def load_adult() -> Table:
    """UCI Adult: the official training (32,561 rows) and test (16,281 rows) splits, concatenated.

    ``?`` is read as missing; the test split's first line (``|1x3 Cross validator``) is
    skipped and its labels lose their trailing dot. Label ``income``, positive ``>50K``.
    """
    train_raw, test_raw = _bundled_bytes("adult.data.gz"), _bundled_bytes("adult.test.gz")
    train = _read_adult(train_raw, skip_marker=False)
    test = _read_adult(test_raw, skip_marker=True)
    frame = pd.concat([train, test], ignore_index=True)
    is_test = np.r_[np.zeros(len(train), bool), np.ones(len(test), bool)]
    return Table(
        name="adult",
        frame=frame,
        label="income",
        positive_label=">50K",
        default_sensitive=("sex",),
        sha256=_sha256(train_raw, test_raw),
        is_test=is_test,
    )


COMPAS_COLUMNS = [
    "sex", "age", "age_cat", "race", "juv_fel_count", "juv_misd_count", "juv_other_count",
    "priors_count", "c_charge_degree", "two_year_recid",
]  # fmt: skip


def load_compas() -> Table:
    """ProPublica COMPAS (two-year recidivism) with ProPublica's filters: 6,172 rows.

    Filters: ``days_b_screening_arrest`` within ±30, ``is_recid != -1``,
    ``c_charge_degree != 'O'``, ``score_text != 'N/A'``. The file repeats the column names
    ``decile_score`` and ``priors_count``; the first of each is used. The COMPAS score itself
    is not a feature. Label ``two_year_recid``, positive ``1`` (re-offended within two years).
    """
    raw = _bundled_bytes("compas-scores-two-years.csv.gz")
    frame = pd.read_csv(io.BytesIO(raw), keep_default_na=False, na_values=[""])
    keep = (
        frame["days_b_screening_arrest"].between(-30, 30)
        & (frame["is_recid"] != -1)
        & (frame["c_charge_degree"] != "O")
        & (frame["score_text"] != "N/A")
    )
    frame = frame.loc[keep, COMPAS_COLUMNS].reset_index(drop=True)
    return Table(
        name="compas",
        frame=frame,
        label="two_year_recid",
        positive_label=1,
        default_sensitive=("race",),
        sha256=_sha256(raw),
    )


GERMAN_COLUMNS = [
    "checking_status", "duration", "credit_history", "purpose", "credit_amount",
    "savings_status", "employment", "installment_rate", "personal_status", "other_parties",
    "residence_since", "property", "age", "other_payment_plans", "housing",
    "existing_credits", "job", "num_dependents", "own_telephone", "foreign_worker", "credit",
]  # fmt: skip
_GERMAN_SEX = {"A91": "male", "A93": "male", "A94": "male", "A92": "female", "A95": "female"}


def load_german() -> Table:
    """UCI Statlog German credit: 1,000 rows, attributes kept in their coded form (A11, ...).

    ``sex`` is decoded from personal status (A91, A93, A94 male; A92, A95 female) and the
    personal-status column is dropped, since it encodes sex. Label ``credit``: ``good``
    (code 1, the positive label) or ``bad`` (code 2).
    """
    raw = _bundled_bytes("german.data.gz")
    frame = pd.read_csv(io.BytesIO(raw), sep=" ", header=None, names=GERMAN_COLUMNS)
    frame.insert(0, "sex", frame.pop("personal_status").map(_GERMAN_SEX))
    frame["credit"] = frame["credit"].map({1: "good", 2: "bad"})
    return Table(
        name="german",
        frame=frame,
        label="credit",
        positive_label="good",
        default_sensitive=("sex",),
        sha256=_sha256(raw),
    )


def load_bundled(name: str) -> Table:
    """Load a bundled data set by name: one of ``adult``, ``compas``, ``german``."""
    loaders = {"adult": load_adult, "compas": load_compas, "german": load_german}
    if name not in loaders:
        raise DataError(f"data.dataset: unknown bundled data set {name!r}; allowed: {', '.join(BUNDLED)} or a path to a .csv/.parquet file")
    return loaders[name]()


def _check_unique_columns(columns: list[str], path: Path) -> None:
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise DataError(f"{path.name}: column name {column!r} appears more than once; column names must be unique")
        seen.add(column)


def load_table(path: str | Path, label: str, positive_label: object, field: str = "data.dataset") -> Table:
    """Load a user's CSV (UTF-8, a byte-order mark allowed) or Parquet file.

    The file must have a header row with unique column names. ``positive_label`` is matched
    against the label column's values; a label that is written as a number in the file
    matches the number or its text (``1`` or ``"1"``). ``field`` names the file in errors
    (the spec field, or the command-line argument).
    """
    path = Path(path)
    if not path.is_file():
        allowed = f"give a bundled name ({', '.join(BUNDLED)}) or a path" if field == "data.dataset" else "give a path"
        raise DataError(f"{field}: file {str(path)!r} does not exist; {allowed} to a .csv, .csv.gz or .parquet file")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    raw = path.read_bytes()
    try:
        if suffix in (".csv", ".csv.gz"):
            text = gzip.decompress(raw) if suffix == ".csv.gz" else raw
            columns = _csv_header(text)
            _check_unique_columns(columns, path)
            frame = pd.read_csv(io.BytesIO(text), encoding="utf-8-sig")
        elif suffix == ".parquet":
            frame = pd.read_parquet(io.BytesIO(raw))
            _check_unique_columns([str(c) for c in frame.columns], path)
        else:
            raise DataError(f"{field}: file type {suffix or '(none)'!r} of {path.name!r} is not supported; allowed: .csv, .csv.gz, .parquet")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path.name}: cannot be read as {suffix.lstrip('.')}: {reason}") from None
    frame.columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path.name}: has no data rows; at least one row per split is needed")
    if label not in frame.columns:
        raise DataError(f"data.label: column {label!r} is not in {path.name}; columns: {', '.join(frame.columns)}")
    return Table(
        name=path.stem.split(".")[0],
        frame=frame,
        label=label,
        positive_label=_match_label(frame[label], positive_label, path.name),
        default_sensitive=(),
        sha256=_sha256(raw),
    )


def _csv_header(text: bytes) -> list[str]:
    """Column names of a CSV as written (pandas renames duplicates, so read them ourselves)."""
    first = text.decode("utf-8-sig").splitlines()[:1]
    if not first:
        raise DataError("data file is empty: a header row and at least one data row are needed")
    return next(csv.reader(first))


def _match_label(column: pd.Series, positive_label: object, where: str) -> object:
    values = column.dropna().unique().tolist()
    for value in values:
        if value == positive_label or str(value) == str(positive_label):
            return value
    shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in values[:10])
    hint = " (YAML reads unquoted yes/no/true/false as booleans: quote the value)" if isinstance(positive_label, bool) else ""
    raise DataError(f"data.positive_label: {positive_label!r} does not occur in column {column.name!r} of {where}; values: {shown}{hint}")
