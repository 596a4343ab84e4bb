"""After the trials: the front on validation, its models on the test split, the registry
versions, ``trials.csv`` and the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from ethicsweep.analysis.heldout import evaluate_checkpoint, trial_config
from ethicsweep.analysis.pareto import front_ranks
from ethicsweep.analysis.registry import register_front
from ethicsweep.analysis.report import ReportContext, write_report
from ethicsweep.data import PreparedData
from ethicsweep.search import SweepOutcome
from ethicsweep.search.tracking import governance_tags, provenance_tags
from ethicsweep.spec import SweepSpec

TRIALS_FILE, REPORT_FILE = "trials.csv", "report.html"


@dataclass(frozen=True)
class SweepAnalysis:
    """The analysed sweep: every trial with its front rank, and the front with test metrics."""

    trials: pd.DataFrame
    front: pd.DataFrame
    report: Path
    trials_csv: Path


def analyze_sweep(spec: SweepSpec, data: PreparedData, outcome: SweepOutcome) -> SweepAnalysis:
    """Rank the trials on validation, re-evaluate the front on test, register it, report it.

    Front models are ordered by the first objective, best first: ``candidate-1`` is the best
    on it. Trials with exactly the same objective values count once (the earliest). Test
    metrics come from the checkpointed weights and the untouched test split.
    """
    if data.test is None:
        raise ValueError("analysis needs the test split: pass the driver's PreparedData, not for_workers()")
    objectives = [(o.metric, o.mode) for o in spec.search.objectives]
    trials = outcome.trials.copy()
    if trials.empty:
        trials = pd.DataFrame(columns=["trial_id", "run_id", "status", "error", "checkpoint", "params"])
    ok = (trials["status"] == "ok").to_numpy() if len(trials) else None
    trials["front_rank"] = front_ranks(trials, [(f"val/{m}", d) for m, d in objectives], feasible=ok) if len(trials) else []

    objective_columns = [f"val/{m}" for m, _ in objectives]
    front = trials[trials["front_rank"] == 0].drop_duplicates(subset=objective_columns).copy()
    first, mode = objectives[0]
    front = front.sort_values(f"val/{first}", ascending=(mode == "min"), kind="stable").reset_index(drop=True)
    configs = [trial_config(spec.train, params) for params in front["params"]]
    notes: set[str] = set()
    sizes = np.bincount(data.validation.groups, minlength=len(data.group_names))
    small = [f"{name} ({size})" for name, size in zip(data.group_names, sizes) if size < data.min_group_size]
    if small:
        notes.add(f"validation split: left out of gaps (fewer than {data.min_group_size} rows): {', '.join(small)}")
    test_rows = []
    for (_, row), config in zip(front.iterrows(), configs):
        report = evaluate_checkpoint(row["checkpoint"], config, data)
        notes.update(f"test split: {n}" for n in report.notes)
        test_rows.append({f"test/{k}": v for k, v in report.values.items()})
    front = pd.concat([front, pd.DataFrame(test_rows, index=front.index)], axis=1)
    front.insert(0, "candidate", [f"candidate-{k}" for k in range(1, len(front) + 1)])

    client = MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)
    provenance = provenance_tags(spec, data.sha256)
    governance = spec.governance
    front["acceptable_risk_met"] = [
        all(governance.risk_met(m, row[f"test/{m}"]) for m in governance.acceptable_risk) for _, row in front.iterrows()
    ]
    tags = {**provenance, **governance_tags(spec)}
    front.insert(1, "version", register_front(client, spec, data, front, configs, tags) if len(front) else [])

    trials_csv = outcome.run_dir / TRIALS_FILE
    trials.to_csv(trials_csv, index=False)
    context = ReportContext(
        sweep=spec.name,
        dataset=data.name,
        sensitive=data.sensitive,
        group_names=data.group_names,
        objectives=objectives,
        tracking_uri=outcome.tracking_uri,
        wall_seconds=outcome.wall_seconds,
        provenance=provenance,
        governance=governance,
        notes=tuple(sorted(notes)),
    )
    report = write_report(outcome.run_dir / REPORT_FILE, trials, front, context)
    for path in (report, trials_csv):
        client.log_artifact(outcome.parent_run_id, str(path))
    return SweepAnalysis(trials=trials, front=front, report=report, trials_csv=trials_csv)
