"""Bad input through the command line: each malformed spec or data file gives one line on
stderr that names what is wrong and what is allowed, exit status 2, no traceback, and
nothing written to MLflow. Inputs that look odd but are valid (a byte-order mark,
non-ASCII column names) are accepted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ethicsweep.cli import main

SPACE = {"training.lr": {"type": "float", "low": 0.001, "high": 0.01}}


def _frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 80, rows), "income": rng.normal(50, 10, rows).round(2),
        "gender": rng.choice(["f", "m"], rows), "region": rng.choice(["n", "s"], rows),
        "approved": rng.choice(["yes", "no"], rows),
    })  # fmt: skip


def _spec(data: dict | None = None, **overrides) -> dict:
    spec = {"name": "bad", "data": data or {"dataset": "adult"}, "search": {"num_trials": 2, "space": dict(SPACE)}}
    for path, value in overrides.items():
        node = spec
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return spec


def _file_data(path: Path, **extra) -> dict:
    return {"dataset": str(path), "label": "approved", "positive_label": "yes", "sensitive": ["gender"], **extra}


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, document: object, *args: str) -> tuple[int, str, str]:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["ethicsweep", "sweep", str(spec_path), "--output-dir", str(tmp_path / "runs"), *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv", **kwargs) -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False, **kwargs)
    return path


def _one_line_refusal(tmp_path: Path, code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not list((tmp_path / "runs").rglob("mlflow.db")), "a refused sweep wrote to MLflow"


SPEC_CASES = [
    ("unknown term", _spec(train={"terms": [{"kind": "fairness_magic"}]}), ["fairness_magic", "allowed"]),
    ("negative weight", _spec(train={"terms": [{"kind": "demographic_parity", "weight": -1}]}), ["weight", "-1"]),
    ("bound out of range", _spec(train={"terms": [{"kind": "demographic_parity", "mode": "constraint", "bound": -0.1}]}), ["bound"]),
    ("constraint mode without bound", _spec(train={"terms": [{"kind": "demographic_parity", "mode": "constraint"}]}), ["bound"]),
    ("unknown objective metric", _spec(search__objectives=[{"metric": "fairness"}]), ["fairness", "allowed"]),
    ("objective in the wrong direction", _spec(search__objectives=[{"metric": "dp_gap", "direction": "max"}]), ["dp_gap", "min"]),
    ("constraint on an unknown metric", _spec(search__constraints=["unfairness <= 1"]), ["unfairness", "accuracy"]),
    ("constraint that is not a rule", _spec(search__constraints=["dp_gap <<= 1"]), ["dp_gap <<= 1", "METRIC OP NUMBER"]),
    ("grace period past the epochs", _spec(train={"training": {"epochs": 2}}, search__scheduler={"kind": "mo_asha", "grace_period": 10}),
     ["search.scheduler.grace_period", "10", "allowed: 1 to 2"]),
    ("grace period past the searched epochs",
     _spec(search__scheduler={"kind": "mo_asha", "grace_period": 8}, search__space={"training.epochs": {"type": "int", "low": 3, "high": 6}}),
     ["search.scheduler.grace_period", "8", "allowed: 1 to 6"]),
    ("constraint on the test split", _spec(search__constraints=["test/dp_gap <= 0.1"]), ["test/"]),
    ("unknown top-level field", _spec(serach={}), ["serach"]),
    ("wrong type", _spec(search__num_trials="many"), ["search.num_trials", "many"]),
    ("no trials", _spec(search__num_trials=0), ["search.num_trials", "0"]),
    ("population of one", _spec(search__population_size=1), ["search.population_size"]),
    ("negative GPUs", _spec(search__gpus_per_trial=-0.5), ["search.gpus_per_trial"]),
    ("unknown searcher", _spec(search__searcher="cmaes"), ["search.searcher", "cmaes", "nsga2"]),
    ("unknown scheduler", _spec(search__scheduler={"kind": "asha"}), ["search.scheduler.kind", "mo_asha"]),
    ("warm start outside the space", _spec(search__initial=[{"training.lr": 0.5}]), ["search.initial.0", "0.5", "range"]),
    ("warm start with a pymoo searcher", _spec(search__searcher="pymoo-nsga2", search__initial=[{"training.lr": 0.005}]), ["search.initial", "Optuna"]),
    ("empty search space", _spec(search__space={}), ["search.space", "empty"]),
    ("space path naming nothing", _spec(search__space={"training.speed": {"type": "float", "low": 1, "high": 2}}), ["training.speed"]),
    ("log range from zero", _spec(search__space={"training.lr": {"type": "float", "low": 0, "high": 1, "log": True}}), ["low > 0"]),
    ("acceptable risk on an unknown metric", _spec(governance={"acceptable_risk": {"niceness": 1}}), ["niceness"]),
    ("DP-SGD with a fairness spread", _spec(train={"privacy": {"dp_sgd": True, "noise_multiplier": 1.0},
                                                   "terms": [{"kind": "demographic_parity"}]}), ["demographic_parity"]),  # fmt: skip
    ("DP-SGD with sigma and a target epsilon", _spec(train={"privacy": {"dp_sgd": True, "noise_multiplier": 1.0, "target_epsilon": 1.0}}),
     ["noise_multiplier", "target_epsilon"]),  # fmt: skip
    ("bins not increasing", _spec(data={"dataset": "adult", "sensitive": ["age"], "bins": {"age": [50, 20]}}), ["bins"]),
    ("unknown bundled data set", _spec(data={"dataset": "mnist"}), ["mnist", "adult"]),
    ("sensitive column not in the data", _spec(data={"dataset": "adult", "sensitive": ["religion"]}), ["religion"]),
    ("continuous sensitive column without bins", _spec(data={"dataset": "adult", "sensitive": ["age"]}), ["age", "bins"]),
    ("context column not in the data", _spec(data={"dataset": "adult", "context": "weather"}), ["weather"]),
]


@pytest.mark.parametrize(("case", "document", "fragments"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_a_malformed_spec_is_one_line(case: str, document: dict, fragments: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    _one_line_refusal(tmp_path, *_run(tmp_path, monkeypatch, capsys, document), *fragments)


@pytest.mark.parametrize(
    ("case", "text", "fragments"),
    [("a YAML list", "- name: x\n", ["mapping"]), ("an empty file", "", ["empty"]), ("not YAML", "name: [unclosed\n", ["YAML"]),
     ("a duplicated key", "name: a\nname: b\n", ["name"])],
    ids=lambda v: v if isinstance(v, str) and " " in v else None,
)  # fmt: skip
def test_a_spec_file_that_is_not_a_mapping_is_one_line(case: str, text: str, fragments: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    _one_line_refusal(tmp_path, *_run(tmp_path, monkeypatch, capsys, text), *fragments)


def _data_case(name: str, tmp_path: Path) -> tuple[dict, list[str]]:
    """(spec, fragments of the error) for one malformed data file, written into ``tmp_path``."""
    frame = _frame()
    if name == "empty":
        return _spec(_file_data(_csv(tmp_path, frame.iloc[:0]))), ["no data rows"]
    if name == "single class":
        return _spec(_file_data(_csv(tmp_path, frame.assign(approved="yes")))), ["approved", "one"]
    if name == "positive label absent":
        return _spec(_file_data(_csv(tmp_path, frame), positive_label="maybe")), ["maybe", "approved"]
    if name == "non-binary label":
        labels = np.resize(["yes", "no", "pending"], len(frame))
        return _spec(_file_data(_csv(tmp_path, frame.assign(approved=labels)))), ["approved", "pending"]
    if name == "label column missing":
        return _spec(_file_data(_csv(tmp_path, frame.drop(columns="approved")))), ["approved", "columns"]
    if name == "sensitive column missing":
        return _spec(_file_data(_csv(tmp_path, frame), sensitive=["ethnicity"])), ["ethnicity"]
    if name == "sensitive with one value":
        return _spec(_file_data(_csv(tmp_path, frame.assign(gender="f")))), ["data.sensitive", "gender", "single value"]
    if name == "sensitive with NaN":
        return _spec(_file_data(_csv(tmp_path, frame.assign(gender=frame["gender"].where(frame.index % 7 != 0))))), ["gender", "missing"]
    if name == "huge feature values":
        return _spec(_file_data(_csv(tmp_path, frame.assign(income=frame["income"] * 1e306)))), ["income"]
    if name == "infinite feature values":
        return _spec(_file_data(_csv(tmp_path, frame.assign(income=np.where(frame.index == 3, np.inf, frame["income"]))))), ["income"]
    if name == "duplicated columns":
        path = tmp_path / "dup.csv"
        path.write_text("age,age,gender,approved\n1,2,f,yes\n3,4,m,no\n")
        return _spec(_file_data(path)), ["age", "unique"]
    if name == "missing file":
        return _spec(_file_data(tmp_path / "absent.csv")), ["data.dataset", "absent.csv", "existing file"]
    if name == "unsupported file type":
        path = tmp_path / "data.txt"
        path.write_text("a,b\n1,2\n")
        return _spec(_file_data(path)), [".txt", ".csv"]
    if name == "binary garbage":
        path = tmp_path / "data.csv"
        path.write_bytes(bytes(range(256)) * 4)
        return _spec(_file_data(path)), ["data.csv"]
    raise AssertionError(name)


DATA_CASES = ["empty", "single class", "positive label absent", "non-binary label", "label column missing", "sensitive column missing",
              "sensitive with one value", "sensitive with NaN", "huge feature values", "infinite feature values", "duplicated columns",
              "missing file", "unsupported file type", "binary garbage"]  # fmt: skip


@pytest.mark.parametrize("case", DATA_CASES)
def test_a_malformed_data_file_is_one_line(case: str, tmp_path: Path, monkeypatch, capsys) -> None:
    document, fragments = _data_case(case, tmp_path)
    _one_line_refusal(tmp_path, *_run(tmp_path, monkeypatch, capsys, document), *fragments)


def test_a_byte_order_mark_and_non_ascii_column_names_are_accepted(tmp_path: Path) -> None:
    """Valid files that trip naive readers: the BOM is not part of the first column's name,
    and non-ASCII names work as features and as a sensitive column."""
    from ethicsweep.data import prepare
    from ethicsweep.spec import DataSpec

    frame = _frame(400).rename(columns={"age": "âge", "gender": "género"})
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False).encode("utf-8"))
    data = prepare(DataSpec(dataset=str(path), label="approved", positive_label="yes", sensitive=["género"]), seed=0)
    assert data.group_names == ("género=f", "género=m")
    assert any(name.startswith("âge") for name in data.feature_names)
    assert len(data.train) + len(data.validation) + len(data.test) == 400


def test_an_mlflow_server_that_is_down_is_one_line_before_any_trial(tmp_path: Path, monkeypatch, capsys) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = _run(tmp_path, monkeypatch, capsys, _spec(), "--tracking-uri", f"http://127.0.0.1:{port}")
    _one_line_refusal(tmp_path, code, out, err, "tracking_uri", "no MLflow server answers", "mlflow server")


def test_a_storage_path_on_an_unknown_filesystem_is_one_line_before_any_trial(tmp_path: Path, monkeypatch, capsys) -> None:
    code, out, err = _run(tmp_path, monkeypatch, capsys, _spec(), "--storage-path", "ftp://x/y")
    _one_line_refusal(tmp_path, code, out, err, "storage_path", "'ftp://x/y'", "'ftp'", "allowed", "s3://")


@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_a_storage_path_that_cannot_be_a_directory_is_one_line_before_any_trial(tmp_path: Path, monkeypatch, capsys, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    storage = str(blocker / "checkpoints") if where == "file" else "/proc/ethicsweep-checkpoints"
    code, out, err = _run(tmp_path, monkeypatch, capsys, _spec(), "--storage-path", storage)
    _one_line_refusal(tmp_path, code, out, err, "storage_path", storage, "allowed")
