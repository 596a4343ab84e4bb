"""Loaders: the bundled files checked against counts taken independently from the raw
gzip files with the csv module, and the generic CSV/Parquet loader's errors."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections import Counter
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ethicsweep.data.loaders import load_adult, load_bundled, load_compas, load_german, load_table
from ethicsweep.errors import DataError


def raw_text(filename: str) -> str:
    data = resources.files("ethicsweep.data.bundled").joinpath(filename).read_bytes()
    return gzip.decompress(data).decode("utf-8")


def adult_raw_rows(filename: str) -> list[list[str]]:
    """Rows of an Adult file as stripped fields; the test file's marker line and blank lines dropped."""
    rows = []
    for fields in csv.reader(io.StringIO(raw_text(filename))):
        if len(fields) != 15:  # blank line or "|1x3 Cross validator"
            continue
        rows.append([f.strip() for f in fields])
    return rows


@pytest.fixture(scope="module")
def adult():
    return load_adult()


@pytest.fixture(scope="module")
def adult_raw():
    return adult_raw_rows("adult.data.gz"), adult_raw_rows("adult.test.gz")


@pytest.fixture(scope="module")
def compas():
    return load_compas()


@pytest.fixture(scope="module")
def german():
    return load_german()


# --------------------------------------------------------------------------- Adult


def test_adult_raw_file_row_counts(adult_raw):
    train, test = adult_raw
    assert (len(train), len(test)) == (32_561, 16_281)


def test_adult_rows_and_test_mask(adult):
    assert len(adult.frame) == 32_561 + 16_281
    assert adult.is_test is not None
    assert adult.is_test.dtype == bool
    assert not adult.is_test[:32_561].any()
    assert adult.is_test[32_561:].all()


def test_adult_labels_have_no_trailing_dot(adult):
    assert set(adult.frame["income"].unique()) == {"<=50K", ">50K"}
    assert adult.label == "income"
    assert adult.positive_label == ">50K"


def test_adult_label_counts_match_raw(adult, adult_raw):
    train, test = adult_raw
    expected_train = Counter(r[14].rstrip(".") for r in train)
    expected_test = Counter(r[14].rstrip(".") for r in test)
    frame = adult.frame
    assert frame.loc[~adult.is_test, "income"].value_counts().to_dict() == dict(expected_train)
    assert frame.loc[adult.is_test, "income"].value_counts().to_dict() == dict(expected_test)


def test_adult_workclass_question_marks_are_missing(adult, adult_raw):
    train, test = adult_raw
    raw_missing = sum(r[1] == "?" for r in train + test)
    assert raw_missing == 2_799
    assert int(adult.frame["workclass"].isna().sum()) == raw_missing


@pytest.mark.parametrize(("column", "index"), [("occupation", 6), ("native_country", 13)])
def test_adult_other_question_marks_are_missing(adult, adult_raw, column, index):
    train, test = adult_raw
    assert int(adult.frame[column].isna().sum()) == sum(r[index] == "?" for r in train + test)


def test_adult_no_question_mark_strings_left(adult):
    text = adult.frame.select_dtypes(exclude="number")
    assert not (text == "?").any().any()


def test_adult_values_stripped_and_in_file_order(adult, adult_raw):
    train, test = adult_raw
    frame = adult.frame
    assert frame["age"].tolist() == [int(r[0]) for r in train + test]
    assert frame["sex"].tolist() == [r[9] for r in train + test]
    assert frame["sex"].value_counts().to_dict() == dict(Counter(r[9] for r in train + test))


def test_adult_default_sensitive(adult):
    assert adult.default_sensitive == ("sex",)


# --------------------------------------------------------------------------- COMPAS


def compas_filtered_raw() -> tuple[list[str], list[list[str]], dict[str, int]]:
    """ProPublica's filters applied with the csv module; first occurrence of a repeated name."""
    reader = csv.reader(io.StringIO(raw_text("compas-scores-two-years.csv.gz")))
    header = next(reader)
    col = {}
    for i, name in enumerate(header):
        col.setdefault(name, i)
    kept = []
    for row in reader:
        days = row[col["days_b_screening_arrest"]]
        if days == "" or not -30 <= float(days) <= 30:
            continue
        if row[col["is_recid"]] == "-1" or row[col["c_charge_degree"]] == "O" or row[col["score_text"]] == "N/A":
            continue
        kept.append(row)
    return header, kept, col


def test_compas_rows_after_propublica_filters(compas):
    _, kept, _ = compas_filtered_raw()
    assert len(kept) == 6_172
    assert len(compas.frame) == len(kept)


def test_compas_label_counts_match_raw(compas):
    _, kept, col = compas_filtered_raw()
    expected = Counter(int(r[col["two_year_recid"]]) for r in kept)
    assert compas.frame["two_year_recid"].value_counts().to_dict() == dict(expected)
    assert compas.positive_label == 1


def test_compas_uses_first_priors_count_and_keeps_order(compas):
    _, kept, col = compas_filtered_raw()
    assert compas.frame["priors_count"].tolist() == [int(r[col["priors_count"]]) for r in kept]
    assert compas.frame["race"].tolist() == [r[col["race"]] for r in kept]


def test_compas_score_is_not_a_column(compas):
    assert not any("decile_score" in c or "score_text" in c for c in compas.frame.columns)


def test_compas_default_sensitive(compas):
    assert compas.default_sensitive == ("race",)


# --------------------------------------------------------------------------- German


def german_raw_rows() -> list[list[str]]:
    return [line.split() for line in raw_text("german.data.gz").splitlines() if line.strip()]


def test_german_rows(german):
    assert len(german_raw_rows()) == 1_000
    assert len(german.frame) == 1_000


def test_german_sex_decoded_from_ninth_attribute(german):
    decode = {"A91": "male", "A93": "male", "A94": "male", "A92": "female", "A95": "female"}
    raw = [decode[r[8]] for r in german_raw_rows()]
    assert german.frame["sex"].tolist() == raw
    assert german.frame["sex"].value_counts().to_dict() == dict(Counter(raw))


def test_german_personal_status_dropped(german):
    assert "personal_status" not in german.frame.columns


def test_german_label_counts_match_raw(german):
    raw = Counter({"1": "good", "2": "bad"}[r[20]] for r in german_raw_rows())
    assert german.frame["credit"].value_counts().to_dict() == dict(raw)
    assert german.positive_label == "good"


def test_german_sha256_is_of_decompressed_file(german):
    # the value recorded in bundled/ATTRIBUTION.md
    expected = "b21f3d81db8071257d5ff1deaeba1fd4303b62712e6fcc9715c7a86202cb5871"
    assert hashlib.sha256(raw_text("german.data.gz").encode()).hexdigest() == expected
    assert german.sha256 == expected


def test_load_bundled_by_name():
    assert load_bundled("german").name == "german"


def test_load_bundled_unknown_name():
    with pytest.raises(DataError, match="'mnist'"):
        load_bundled("mnist")


# --------------------------------------------------------------------------- load_table


def write(path, text: str, bom: bool = False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


CSV = "age,group,y\n30,a,yes\n40,b,no\n50,a,yes\n"


def test_csv_basic(tmp_path):
    table = load_table(write(tmp_path / "people.csv", CSV), "y", "yes")
    assert list(table.frame.columns) == ["age", "group", "y"]
    assert table.frame["age"].tolist() == [30, 40, 50]
    assert table.positive_label == "yes"
    assert table.name == "people"
    assert table.is_test is None


def test_csv_with_byte_order_mark(tmp_path):
    table = load_table(write(tmp_path / "bom.csv", CSV, bom=True), "y", "yes")
    assert list(table.frame.columns) == ["age", "group", "y"]


def test_csv_sha256_is_of_file_bytes(tmp_path):
    path = write(tmp_path / "people.csv", CSV)
    assert load_table(path, "y", "yes").sha256 == hashlib.sha256(CSV.encode()).hexdigest()


def test_csv_gz(tmp_path):
    path = tmp_path / "people.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    table = load_table(path, "y", "yes")
    assert len(table.frame) == 3
    assert table.name == "people"


def test_parquet(tmp_path):
    path = tmp_path / "people.parquet"
    pd.DataFrame({"age": [30, 40], "y": [1, 0]}).to_parquet(path)
    table = load_table(path, "y", 1)
    assert table.frame["age"].tolist() == [30, 40]
    assert table.positive_label == 1


def test_numeric_label_matches_text(tmp_path):
    table = load_table(write(tmp_path / "n.csv", "x,y\n1,0\n2,1\n"), "y", "1")
    assert table.positive_label == 1


def test_csv_duplicated_column_names(tmp_path):
    with pytest.raises(DataError, match="'age'"):
        load_table(write(tmp_path / "dup.csv", "age,age,y\n1,2,yes\n"), "y", "yes")


def test_parquet_duplicated_column_names(tmp_path):
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4]), pa.array([0, 1])], names=["a", "a", "y"]), path)
    with pytest.raises(DataError):
        load_table(path, "y", 1)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_table(tmp_path / "nope.csv", "y", 1)


def test_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match=r"\.txt"):
        load_table(write(tmp_path / "data.txt", CSV), "y", "yes")


def test_empty_file(tmp_path):
    with pytest.raises(DataError):
        load_table(write(tmp_path / "empty.csv", ""), "y", "yes")


def test_header_only_file(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        load_table(write(tmp_path / "head.csv", "age,y\n"), "y", "yes")


def test_absent_label_column(tmp_path):
    with pytest.raises(DataError) as info:
        load_table(write(tmp_path / "p.csv", CSV), "income", "yes")
    assert "'income'" in str(info.value)


def test_positive_label_not_present(tmp_path):
    with pytest.raises(DataError) as info:
        load_table(write(tmp_path / "p.csv", CSV), "y", "maybe")
    assert "'maybe'" in str(info.value)
    assert "'yes'" in str(info.value)


def test_csv_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name,y\nJos\xe9,1\nAna,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv"):
        load_table(path, "y", 1)


def test_unreadable_gzip(tmp_path):
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError):
        load_table(path, "y", 1)


def test_load_table_errors_are_one_line(tmp_path):
    calls = [
        lambda: load_table(tmp_path / "nope.csv", "y", 1),
        lambda: load_table(write(tmp_path / "dup.csv", "a,a\n1,2\n"), "a", 1),
        lambda: load_table(write(tmp_path / "p.csv", CSV), "y", "maybe"),
        lambda: load_table(write(tmp_path / "e.csv", ""), "y", 1),
    ]
    for call in calls:
        with pytest.raises(DataError) as info:
            call()
        assert "\n" not in str(info.value)


def test_table_frame_numeric_dtypes(tmp_path):
    table = load_table(write(tmp_path / "p.csv", CSV), "y", "yes")
    assert np.issubdtype(table.frame["age"].dtype, np.integer)
