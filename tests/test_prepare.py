"""prepare(): splits, stratification, seeding, preprocessing fitted on training rows only,
and the checks that refuse unusable data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ethicsweep.data.loaders import Table, load_adult
from ethicsweep.data.prepare import load, prepare
from ethicsweep.errors import DataError
from ethicsweep.spec import DataSpec

# --------------------------------------------------------------------------- Adult


@pytest.fixture(scope="module")
def adult_table():
    return load_adult()


@pytest.fixture(scope="module")
def adult(adult_table):
    return prepare(DataSpec(), seed=0, table=adult_table)


def test_adult_test_split_is_official_test(adult, adult_table):
    assert len(adult.test) == 16_281
    raw = adult_table.frame.loc[adult_table.is_test]
    np.testing.assert_array_equal(adult.test.y, (raw["income"] == ">50K").to_numpy().astype(np.float32))
    male = adult.group_names.index("sex=Male")
    np.testing.assert_array_equal(adult.test.groups == male, (raw["sex"] == "Male").to_numpy())


def test_adult_test_features_follow_official_rows(adult, adult_table):
    # standardizing is affine and increasing: the test rows' age column is perfectly
    # correlated with the raw ages of the official test rows, in file order
    age = adult.feature_names.index("age")
    raw_age = adult_table.frame.loc[adult_table.is_test, "age"].to_numpy(dtype=float)
    assert np.corrcoef(adult.test.X[:, age], raw_age)[0, 1] == pytest.approx(1.0, abs=1e-6)


def test_adult_train_and_validation_cover_official_train(adult):
    assert len(adult.train) + len(adult.validation) == 32_561


def test_adult_validation_fraction(adult):
    share = len(adult.validation) / (len(adult.train) + len(adult.validation))
    assert share == pytest.approx(0.2, abs=0.001)


def test_adult_stratified_on_group_and_label(adult):
    for g in range(len(adult.group_names)):
        for label in (0.0, 1.0):
            train_share = np.mean((adult.train.groups == g) & (adult.train.y == label))
            val_share = np.mean((adult.validation.groups == g) & (adult.validation.y == label))
            assert abs(train_share - val_share) <= 0.01, (adult.group_names[g], label)


def test_adult_sensitive_not_a_feature_by_default(adult):
    assert not any(name.startswith("sex") for name in adult.feature_names)
    assert "income" not in adult.feature_names


def test_adult_sensitive_as_feature_when_asked(adult_table):
    data = prepare(DataSpec(sensitive_as_feature=True), seed=0, table=adult_table)
    assert any(name.startswith("sex") for name in data.feature_names)


def test_adult_training_features_standardized(adult):
    # the scaler is fitted on exactly the training rows: there, each numeric column has
    # mean 0 and (population) standard deviation 1
    for name in ("age", "hours_per_week", "education_num"):
        column = adult.train.X[:, adult.feature_names.index(name)].astype(np.float64)
        assert column.mean() == pytest.approx(0.0, abs=1e-4)
        assert column.std() == pytest.approx(1.0, abs=1e-4)


def test_adult_arrays_dtypes(adult):
    for split in (adult.train, adult.validation, adult.test):
        assert split.X.dtype == np.float32
        assert split.y.dtype == np.float32
        assert split.groups.dtype == np.int64
        assert set(np.unique(split.y)) == {0.0, 1.0}
        assert split.X.shape == (len(split), len(adult.feature_names))
        assert np.isfinite(split.X).all()


def test_adult_for_workers_drops_test(adult):
    workers = adult.for_workers()
    assert workers.test is None and workers.preprocessor is None
    assert len(workers.train) == len(adult.train)


# --------------------------------------------------------------------------- synthetic table

N = 200


def synthetic_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    grp = np.where(np.arange(N) % 3 == 0, "a", "b")
    y = np.where(rng.random(N) < np.where(grp == "a", 0.3, 0.6), "pos", "neg")
    return pd.DataFrame(
        {
            "rid": [f"r{i:03d}" for i in range(N)],  # one-hot: identifies training rows
            "num_id": np.arange(N, dtype=float),  # unique number: identifies every row
            "x": rng.normal(10.0, 3.0, N),
            "w": np.where(np.arange(N) % 10 == 0, np.nan, rng.normal(0.0, 1.0, N)),
            "grp": grp,
            "y": y,
        }
    )


def synthetic_table(frame: pd.DataFrame | None = None, positive="pos") -> Table:
    return Table(
        name="synth",
        frame=synthetic_frame() if frame is None else frame,
        label="y",
        positive_label=positive,
        default_sensitive=("grp",),
        sha256="0" * 64,
    )


@pytest.fixture(scope="module")
def synth():
    frame = synthetic_frame()
    return frame, prepare(DataSpec(), seed=0, table=synthetic_table(frame))


def train_row_ids(data) -> np.ndarray:
    """Row numbers of the training split, read off the one-hot 'rid' columns."""
    columns = [i for i, n in enumerate(data.feature_names) if n.startswith("rid_")]
    onehot = data.train.X[:, columns]
    assert (onehot.sum(axis=1) == 1).all()
    return np.array([int(data.feature_names[columns[j]][len("rid_r"):]) for j in onehot.argmax(axis=1)])


def test_synthetic_split_sizes(synth):
    _, data = synth
    # no official test split: test = ceil(0.2 * 200) = 40; validation = ceil(0.2 * 160) = 32
    assert (len(data.train), len(data.validation), len(data.test)) == (128, 32, 40)


def test_synthetic_splits_disjoint_and_cover(synth):
    frame, data = synth
    j = data.feature_names.index("num_id")
    values = np.concatenate([data.train.X[:, j], data.validation.X[:, j], data.test.X[:, j]])
    # an increasing affine map of distinct ids: distinct values <=> distinct rows
    assert len(np.unique(values)) == N == len(values)


def test_synthetic_heldout_rows_unseen_by_encoder(synth):
    _, data = synth
    columns = [i for i, n in enumerate(data.feature_names) if n.startswith("rid_")]
    assert len(columns) == len(data.train)  # one category per training row, no more
    assert (data.validation.X[:, columns] == 0).all()
    assert (data.test.X[:, columns] == 0).all()


def test_scaler_mean_is_training_rows_mean(synth):
    frame, data = synth
    ids = train_row_ids(data)
    scaler = data.preprocessor.named_transformers_["numeric"][-1]
    numeric = list(data.preprocessor.transformers_[0][2])
    expected = frame.loc[ids, "x"].mean()
    assert scaler.mean_[numeric.index("x")] == pytest.approx(expected)
    assert expected != pytest.approx(frame["x"].mean())  # not the mean over all rows


def test_training_features_standardized_with_training_stats(synth):
    frame, data = synth
    ids = train_row_ids(data)
    raw = frame.loc[ids, "x"].to_numpy()
    expected = (raw - raw.mean()) / raw.std()  # population std, as StandardScaler
    np.testing.assert_allclose(data.train.X[:, data.feature_names.index("x")], expected, rtol=1e-5, atol=1e-5)


def test_validation_features_use_training_stats(synth):
    frame, data = synth
    ids = train_row_ids(data)
    raw_id, raw_x = frame.loc[ids, "num_id"].to_numpy(), frame.loc[ids, "x"].to_numpy()
    # recover validation rows' ids from the num_id column with stats computed here
    val_ids = np.rint(data.validation.X[:, data.feature_names.index("num_id")] * raw_id.std() + raw_id.mean()).astype(int)
    expected = (frame.loc[val_ids, "x"].to_numpy() - raw_x.mean()) / raw_x.std()
    np.testing.assert_allclose(data.validation.X[:, data.feature_names.index("x")], expected, rtol=1e-4, atol=1e-4)


def test_missing_number_imputed_with_training_median(synth):
    frame, data = synth
    ids = train_row_ids(data)
    w = frame.loc[ids, "w"]
    filled = w.fillna(w.median()).to_numpy()
    expected = (filled - filled.mean()) / filled.std()
    np.testing.assert_allclose(data.train.X[:, data.feature_names.index("w")], expected, rtol=1e-5, atol=1e-5)


def test_missing_category_is_its_own_category():
    frame = synthetic_frame().drop(columns=["rid"])
    frame["color"] = np.where(np.arange(N) % 4 == 0, None, np.where(np.arange(N) % 2 == 0, "red", "blue"))
    data = prepare(DataSpec(), seed=0, table=synthetic_table(frame))
    assert {"color_blue", "color_red", "color_missing"} <= set(data.feature_names)


def test_same_seed_same_arrays():
    first = prepare(DataSpec(), seed=3, table=synthetic_table())
    second = prepare(DataSpec(), seed=3, table=synthetic_table())
    for a, b in ((first.train, second.train), (first.validation, second.validation), (first.test, second.test)):
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.groups, b.groups)


def test_other_seed_other_split():
    first = prepare(DataSpec(), seed=3, table=synthetic_table())
    second = prepare(DataSpec(), seed=4, table=synthetic_table())
    assert set(train_row_ids(first)) != set(train_row_ids(second))
    assert not np.array_equal(first.train.X, second.train.X)


def test_synthetic_stratified(synth):
    _, data = synth
    for g in range(len(data.group_names)):
        for label in (0.0, 1.0):
            shares = [np.mean((s.groups == g) & (s.y == label)) for s in (data.train, data.validation, data.test)]
            assert max(shares) - min(shares) <= 0.05


def test_sensitive_not_a_feature_synthetic(synth):
    _, data = synth
    assert not any(name.startswith("grp") for name in data.feature_names)
    assert data.sensitive == ("grp",)
    assert data.group_names == ("grp=a", "grp=b")


def test_labels_are_positive_label_indicator(synth):
    frame, data = synth
    # every split's positives, summed, equal the count of "pos" in the frame
    total = sum(float(s.y.sum()) for s in (data.train, data.validation, data.test))
    assert total == (frame["y"] == "pos").sum()


# --------------------------------------------------------------------------- refusals


def test_single_class_label_is_data_error():
    frame = synthetic_frame()
    frame["y"] = "pos"
    with pytest.raises(DataError, match="one class"):
        prepare(DataSpec(), seed=0, table=synthetic_table(frame))


def test_non_binary_label_is_data_error():
    frame = synthetic_frame()
    frame.loc[:9, "y"] = "maybe"
    with pytest.raises(DataError, match="3 classes"):
        prepare(DataSpec(), seed=0, table=synthetic_table(frame))


def test_missing_label_is_data_error():
    frame = synthetic_frame()
    frame.loc[5, "y"] = None
    with pytest.raises(DataError, match="missing"):
        prepare(DataSpec(), seed=0, table=synthetic_table(frame))


def test_sensitive_equal_to_label_is_data_error():
    with pytest.raises(DataError, match="label"):
        prepare(DataSpec(sensitive=["y"]), seed=0, table=synthetic_table())


def test_absent_sensitive_column_is_data_error():
    with pytest.raises(DataError, match="'religion'"):
        prepare(DataSpec(sensitive=["religion"]), seed=0, table=synthetic_table())


def test_absent_drop_column_is_data_error():
    with pytest.raises(DataError, match="'nope'"):
        prepare(DataSpec(drop=["nope"]), seed=0, table=synthetic_table())


def test_drop_removes_feature():
    data = prepare(DataSpec(drop=["rid"]), seed=0, table=synthetic_table())
    assert not any(name.startswith("rid") for name in data.feature_names)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 1e31, -1e31])
def test_non_finite_or_huge_feature_is_data_error(bad):
    frame = synthetic_frame()
    frame.loc[7, "x"] = bad
    with pytest.raises(DataError, match="'x'"):
        prepare(DataSpec(), seed=0, table=synthetic_table(frame))


def test_nan_feature_is_imputed_not_refused():
    # documented: median-imputed numbers (see test_missing_number_imputed_with_training_median)
    frame = synthetic_frame()
    frame.loc[7, "x"] = np.nan
    data = prepare(DataSpec(), seed=0, table=synthetic_table(frame))
    assert np.isfinite(data.train.X).all() and np.isfinite(data.validation.X).all() and np.isfinite(data.test.X).all()


def test_data_errors_are_one_line():
    frame = synthetic_frame()
    frame.loc[7, "x"] = np.inf
    for spec, table in (
        (DataSpec(), synthetic_table(frame)),
        (DataSpec(sensitive=["y"]), synthetic_table()),
        (DataSpec(sensitive=["religion"]), synthetic_table()),
    ):
        with pytest.raises(DataError) as info:
            prepare(spec, seed=0, table=table)
        assert "\n" not in str(info.value)


def test_load_bundled_with_wrong_label_is_data_error():
    with pytest.raises(DataError, match="data.label"):
        load(DataSpec(dataset="german", label="income"))


def test_load_file_without_label_is_data_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(DataError, match="data.label"):
        load(DataSpec(dataset=str(path)))
