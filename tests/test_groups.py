"""Sensitive-group encoding: intersectional names, missing values, continuous columns, bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ethicsweep.data.groups import encode_groups
from ethicsweep.errors import DataError


def people():
    return pd.DataFrame(
        {
            "race": ["Black", "White", "Black", "White", "Black"],
            "sex": ["Female", "Male", "Male", "Male", "Female"],
            "age": [20, 30, 50, 70, 44],
        }
    )


def row_names(groups):
    return [groups.names[c] for c in groups.codes]


def test_single_column_names():
    groups = encode_groups(people(), ["sex"])
    assert groups.names == ("sex=Female", "sex=Male")
    assert row_names(groups) == ["sex=Female", "sex=Male", "sex=Male", "sex=Male", "sex=Female"]


def test_intersectional_name_format():
    groups = encode_groups(people(), ["race", "sex"])
    assert "race=Black & sex=Female" in groups.names
    assert row_names(groups) == [
        "race=Black & sex=Female",
        "race=White & sex=Male",
        "race=Black & sex=Male",
        "race=White & sex=Male",
        "race=Black & sex=Female",
    ]


def test_empty_intersectional_cell_is_not_a_group():
    # 2 races x 2 sexes = 4 cells, but no White Female row: 3 groups
    groups = encode_groups(people(), ["race", "sex"])
    assert len(groups.names) == 3
    assert "race=White & sex=Female" not in groups.names


def test_column_order_sets_name_order():
    groups = encode_groups(people(), ["sex", "race"])
    assert row_names(groups)[0] == "sex=Female & race=Black"


def test_codes_are_int64_one_per_row():
    groups = encode_groups(people(), ["race", "sex"])
    assert groups.codes.dtype == np.int64
    assert len(groups.codes) == 5
    assert set(groups.codes.tolist()) == set(range(len(groups.names)))


def test_absent_column_is_data_error():
    with pytest.raises(DataError, match="'religion'"):
        encode_groups(people(), ["religion"])


def test_missing_value_is_data_error_naming_column():
    frame = pd.DataFrame({"sex": ["F", None, "M"], "x": [1, 2, 3]})
    with pytest.raises(DataError) as info:
        encode_groups(frame, ["sex"])
    assert "'sex'" in str(info.value)
    assert "own_group" in str(info.value)


def test_missing_nan_in_numeric_column_is_data_error():
    frame = pd.DataFrame({"flag": [0.0, np.nan, 1.0]})
    with pytest.raises(DataError, match="'flag'"):
        encode_groups(frame, ["flag"])


def test_missing_own_group():
    frame = pd.DataFrame({"sex": ["F", None, "M", np.nan]})
    groups = encode_groups(frame, ["sex"], missing="own_group")
    assert row_names(groups) == ["sex=F", "sex=missing", "sex=M", "sex=missing"]
    assert len(groups.names) == 3


def test_missing_own_group_intersectional():
    frame = pd.DataFrame({"race": ["A", "B", None], "sex": ["F", None, "M"]})
    groups = encode_groups(frame, ["race", "sex"], missing="own_group")
    assert row_names(groups) == ["race=A & sex=F", "race=B & sex=missing", "race=missing & sex=M"]


def test_continuous_column_without_bins_is_data_error():
    frame = pd.DataFrame({"income": np.arange(20) * 1000.5})
    with pytest.raises(DataError) as info:
        encode_groups(frame, ["income"])
    assert "'income'" in str(info.value)
    assert "bins" in str(info.value)


def test_few_valued_numeric_column_is_discrete():
    frame = pd.DataFrame({"flag": [0, 1, 1, 0]})
    groups = encode_groups(frame, ["flag"])
    assert groups.names == ("flag=0", "flag=1")


def test_boolean_column_is_discrete():
    frame = pd.DataFrame({"member": [True, False, True]})
    groups = encode_groups(frame, ["member"])
    assert row_names(groups) == ["member=True", "member=False", "member=True"]


def test_bins_make_interval_groups():
    # edges [0, 25, 45, 200), left-closed: 20 -> [0,25); 30, 44 -> [25,45); 50, 70 -> [45,200)
    groups = encode_groups(people(), ["age"], bins={"age": [0, 25, 45, 200]})
    assert groups.names == ("age=[0, 25)", "age=[25, 45)", "age=[45, 200)")
    assert row_names(groups) == ["age=[0, 25)", "age=[25, 45)", "age=[45, 200)", "age=[45, 200)", "age=[25, 45)"]


def test_value_on_inner_edge_goes_to_upper_bin():
    frame = pd.DataFrame({"age": [25, 45]})
    groups = encode_groups(frame, ["age"], bins={"age": [0, 25, 45, 200]})
    assert row_names(groups) == ["age=[25, 45)", "age=[45, 200)"]


def test_bins_with_intersection():
    groups = encode_groups(people(), ["age", "sex"], bins={"age": [0, 45, 200]})
    # 20 F, 30 M, 50 M, 70 M, 44 F
    assert row_names(groups) == [
        "age=[0, 45) & sex=Female",
        "age=[0, 45) & sex=Male",
        "age=[45, 200) & sex=Male",
        "age=[45, 200) & sex=Male",
        "age=[0, 45) & sex=Female",
    ]


def test_value_outside_bins_is_data_error():
    frame = pd.DataFrame({"age": [20, 250]})
    with pytest.raises(DataError) as info:
        encode_groups(frame, ["age"], bins={"age": [0, 25, 45, 200]})
    assert "age" in str(info.value)
    assert "250" in str(info.value)


def test_value_below_first_edge_is_data_error():
    frame = pd.DataFrame({"age": [-1, 20]})
    with pytest.raises(DataError, match="-1"):
        encode_groups(frame, ["age"], bins={"age": [0, 25, 200]})


def test_bins_on_text_column_is_data_error():
    with pytest.raises(DataError, match="'sex'"):
        encode_groups(people(), ["sex"], bins={"sex": [0, 1]})


def test_missing_in_binned_column():
    frame = pd.DataFrame({"age": [20.0, np.nan, 50.0]})
    with pytest.raises(DataError, match="'age'"):
        encode_groups(frame, ["age"], bins={"age": [0, 25, 200]})
    groups = encode_groups(frame, ["age"], bins={"age": [0, 25, 200]}, missing="own_group")
    assert row_names(groups)[1] == "age=missing"
    assert len(groups.names) == 3


def test_error_messages_are_one_line():
    frame = pd.DataFrame({"sex": ["F", None], "income": [1.5, 2.5]})
    for call in (
        lambda: encode_groups(frame, ["sex"]),
        lambda: encode_groups(pd.DataFrame({"v": np.arange(50.0)}), ["v"]),
        lambda: encode_groups(frame, ["income"], bins={"income": [0, 2]}),
    ):
        with pytest.raises(DataError) as info:
            call()
        assert "\n" not in str(info.value)
