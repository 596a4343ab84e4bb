"""After the trials: the front on validation, its models on the test split, the registry
versions, ``trials.csv`` and the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from ray.tune import Checkpoint

from ethicsweep.analysis.heldout import Heldout, evaluate_checkpoint, trial_config
from ethicsweep.analysis.pareto import front_ranks, hypervolume, minimization_form, reference_point
from ethicsweep.analysis.registry import constraint_tags, register_front
from ethicsweep.analysis.report import ReportContext, write_front_png, write_report
from ethicsweep.data import PreparedData
from ethicsweep.rules import Rule
from ethicsweep.search import SweepOutcome
from ethicsweep.search.tracking import governance_tags, provenance_tags
from ethicsweep.spec import SweepSpec

TRIALS_FILE, REPORT_FILE, FRONT_PNG = "trials.csv", "report.html", "front.png"


@dataclass(frozen=True)
class SweepAnalysis:
    """The analysed sweep: every trial with its front rank, and the front with test metrics."""

    trials: pd.DataFrame
    front: pd.DataFrame
    report: Path
    trials_csv: Path
    hypervolume: dict[str, float]


def group_table(heldout: Heldout) -> pd.DataFrame:
    """One row per group on test: count, positives, each rate with its bootstrap interval."""
    table = heldout.report.rates.table()
    for rate, bounds in heldout.intervals.groupby("rate", sort=False):
        bounds = bounds.set_index("group").loc[table["group"]]
        table[f"{rate} 95% interval"] = [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(bounds["low"], bounds["high"])]
    return table


def local_checkpoint(uri: str, directory: Path) -> str:
    """A local directory holding the checkpoint at ``uri``: the path itself when it is
    local (or on a shared file system), else a copy fetched from remote storage (S3, GCS)."""
    if "://" not in uri:
        return uri
    return Checkpoint(path=uri).to_directory(str(directory))


def broken_constraints(trials: pd.DataFrame, rules: list[Rule]) -> list[str]:
    """Per trial, the constraints its final validation metrics break ("" when none; a
    missing or NaN metric breaks its rule)."""
    broken = []
    for _, row in trials.iterrows():
        values = [float(row.get(rule.key, np.nan)) for rule in rules]
        broken.append("; ".join(str(rule) for rule, value in zip(rules, values) if not rule.holds(value)))
    return broken


def analyze_sweep(spec: SweepSpec, data: PreparedData, outcome: SweepOutcome) -> SweepAnalysis:
    """Rank the trials on validation, re-evaluate the front on test, register it, report it.

    Front models are ordered by the first objective, best first: ``candidate-1`` is the best
    on it. Trials that failed or break a search constraint are kept off the front; trials
    with exactly the same objective values count once (the earliest). Test
    metrics come from the checkpointed weights and the untouched test split.
    """
    if data.test is None:
        raise ValueError("analysis needs the test split: pass the driver's PreparedData, not for_workers()")
    objectives = [(o.metric, o.mode) for o in spec.search.objectives]
    trials = outcome.trials.copy()
    if trials.empty:
        trials = pd.DataFrame(columns=["trial_id", "run_id", "status", "error", "checkpoint", "params"])
    trials["broken_constraints"] = broken_constraints(trials, spec.search.rules)
    feasible = ((trials["status"] == "ok") & (trials["broken_constraints"] == "")).to_numpy()
    trials["feasible"] = feasible
    trials["front_rank"] = front_ranks(trials, [(f"val/{m}", d) for m, d in objectives], feasible=feasible) if len(trials) else []

    objective_columns = [f"val/{m}" for m, _ in objectives]
    front = trials[trials["front_rank"] == 0].drop_duplicates(subset=objective_columns).copy()
    first, mode = objectives[0]
    front = front.sort_values(f"val/{first}", ascending=(mode == "min"), kind="stable").reset_index(drop=True)
    configs = [trial_config(spec.train, params) for params in front["params"]]
    front["checkpoint"] = [local_checkpoint(uri, outcome.run_dir / "checkpoints" / trial) for uri, trial in zip(front["checkpoint"], front["trial_id"])]
    notes: set[str] = set()
    infeasible = int(((trials["status"] == "ok") & ~trials["feasible"].astype(bool)).sum()) if len(trials) else 0
    if infeasible:
        notes.add(f"{infeasible} finished trial(s) broke a search constraint ({', '.join(spec.search.constraints)}) and were kept off the front")
    sizes = np.bincount(data.validation.groups, minlength=len(data.group_names))
    small = [f"{name} ({size})" for name, size in zip(data.group_names, sizes) if size < data.min_group_size]
    if small:
        notes.add(f"validation split: left out of gaps (fewer than {data.min_group_size} rows): {', '.join(small)}")
    test_rows, groups = [], {}
    for (_, row), config in zip(front.iterrows(), configs):
        heldout = evaluate_checkpoint(row["checkpoint"], config, data)
        notes.update(f"test split: {n}" for n in heldout.report.notes)
        test_rows.append({f"test/{k}": v for k, v in heldout.report.values.items()})
        groups[row["trial_id"]] = group_table(heldout)
    front = pd.concat([front, pd.DataFrame(test_rows, index=front.index)], axis=1)
    front.insert(0, "candidate", [f"candidate-{k}" for k in range(1, len(front) + 1)])
    # fitted to validation: a front model can be dominated by another one on test
    front["test_front_rank"] = front_ranks(front, [(f"test/{m}", d) for m, d in objectives]) if len(front) else []
    given = {o.metric: o.reference for o in spec.search.objectives if o.reference is not None}
    volumes, references = {}, {}
    for split, labels in (("val", data.validation.y), ("test", data.test.y)):
        points = minimization_form(front, [(f"{split}/{m}", d) for m, d in objectives])
        reference = reference_point(objectives, float(max(labels.mean(), 1 - labels.mean())), points, given)
        volumes[split] = hypervolume(points, reference)
        references[split] = [round(float(-r if d == "max" else r), 6) for r, (_, d) in zip(reference, objectives)]
    front["constraints"] = [
        ", ".join(f"{k.removeprefix('constraint/')} {v}" for k, v in constraint_tags(config, row).items() if k.startswith("constraint/"))
        for (_, row), config in zip(front.iterrows(), configs)
    ]

    client = MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)
    provenance = provenance_tags(spec, data.sha256)
    governance = spec.governance
    front["acceptable_risk_met"] = [
        all(governance.risk_met(m, row[f"test/{m}"]) for m in governance.acceptable_risk) for _, row in front.iterrows()
    ]
    tags = {**provenance, **governance_tags(spec), **{f"hypervolume_reference/{split}": json.dumps(r) for split, r in references.items()}}
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
        hypervolume=volumes,
        reference=references,
        split_rows={"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        group_tables=groups,
        configs=dict(zip(front["trial_id"], configs)),
    )
    report = write_report(outcome.run_dir / REPORT_FILE, trials, front, context)
    artifacts = [report, trials_csv]
    if len(objectives) >= 2 and len(front):
        artifacts.append(write_front_png(outcome.run_dir / FRONT_PNG, trials, front, objectives))
    for path in artifacts:
        client.log_artifact(outcome.parent_run_id, str(path))
    for split, volume in volumes.items():
        client.log_metric(outcome.parent_run_id, f"hypervolume/{split}", volume)
    return SweepAnalysis(trials=trials, front=front, report=report, trials_csv=trials_csv, hypervolume=volumes)
