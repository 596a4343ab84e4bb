"""Compare the registered fronts of two or more sweeps: hypervolume against one reference
point, and the fronts overlaid, on validation and on test.

The sweeps must share their objectives (metric and direction). The common reference point
is, per objective, the worst of the sweeps' own reference points (each recorded on its
versions at registration), unless one is given; so every front is measured inside the same box.
"""

from __future__ import annotations

import html
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from mlflow.tracking import MlflowClient

from ethicsweep.analysis.pareto import hypervolume, minimization_form
from ethicsweep.analysis.registry import front_candidates
from ethicsweep.analysis.report import axis_label, html_page, html_table
from ethicsweep.analysis.selection import Candidate
from ethicsweep.errors import EthicsweepError

SPLITS = ("val", "test")


@dataclass(frozen=True)
class SweepFront:
    """One sweep's registered front: its label (as the user named it), registered model
    name, store, objectives, candidates and the reference point recorded per split (metric
    units; empty when not recorded)."""

    label: str
    name: str
    tracking_uri: str
    objectives: list[tuple[str, str]]
    candidates: list[Candidate]
    references: dict[str, list[float]]

    def points(self, split: str) -> np.ndarray:
        """The candidates' objectives on ``split`` in minimization form (``max`` negated)."""
        keys = [(f"{split}/{m}", mode) for m, mode in self.objectives]
        frame = pd.DataFrame([{key: c.value(key) for key, _ in keys} for c in self.candidates], columns=[k for k, _ in keys])
        return minimization_form(frame, keys)


def load_front(client: MlflowClient, name: str, label: str | None = None) -> SweepFront:
    """The front registered under ``name`` (the latest sweep's ``candidate-<k>`` versions);
    ``label`` names it in tables and plots (default: ``name``)."""
    candidates, objectives = front_candidates(client, name)
    tags = client.get_model_version(name, candidates[0].version).tags
    references = {split: json.loads(tags[f"hypervolume_reference/{split}"]) for split in SPLITS if f"hypervolume_reference/{split}" in tags}
    return SweepFront(label or name, name, client.tracking_uri, objectives, candidates, references)


def common_reference(fronts: list[SweepFront], split: str, given: dict[str, float] | None = None) -> list[float]:
    """Per objective (metric units): ``given`` if stated, else the worst of the fronts'
    recorded references. Raises EthicsweepError when neither is there."""
    given = given or {}
    reference = []
    for i, (metric, mode) in enumerate(fronts[0].objectives):
        if metric in given:
            reference.append(float(given[metric]))
            continue
        recorded = [f.references[split][i] for f in fronts if split in f.references]
        if len(recorded) < len(fronts):
            missing = ", ".join(f.label for f in fronts if split not in f.references)
            example = ",".join(f"{m}=VALUE" for m, _ in fronts[0].objectives)
            raise EthicsweepError(f"--reference: {missing} recorded no reference point (registered by an older ethicsweep); give one: --reference {example}")
        reference.append(min(recorded) if mode == "max" else max(recorded))
    return reference


def check_comparable(fronts: list[SweepFront]) -> None:
    """Raise EthicsweepError unless every front has the first one's objectives."""
    first = fronts[0]
    for other in fronts[1:]:
        if other.objectives != first.objectives:
            describe = lambda f: ", ".join(f"{m} ({d})" for m, d in f.objectives)  # noqa: E731
            raise EthicsweepError(f"SWEEP {other.label!r}: its objectives ({describe(other)}) differ from {first.label!r}'s ({describe(first)}); only sweeps with the same objectives compare")


def hypervolumes(fronts: list[SweepFront], given: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per sweep: front size, and hypervolume on each split at the common reference."""
    check_comparable(fronts)
    rows = {"sweep": [f.label for f in fronts], "front models": [len(f.candidates) for f in fronts]}
    signs = np.array([-1.0 if mode == "max" else 1.0 for _, mode in fronts[0].objectives])
    for split in SPLITS:
        reference = np.array(common_reference(fronts, split, given)) * signs
        rows[f"hypervolume ({split})"] = [hypervolume(f.points(split), reference) for f in fronts]
    return pd.DataFrame(rows)


def _overlay(fronts: list[SweepFront], split: str, pair: tuple[tuple[str, str], tuple[str, str]]) -> go.Figure:
    (y_metric, y_mode), (x_metric, x_mode) = pair
    figure = go.Figure()
    for front in fronts:
        ordered = sorted(front.candidates, key=lambda c: c.value(f"{split}/{x_metric}"))
        figure.add_trace(go.Scatter(
            x=[c.value(f"{split}/{x_metric}") for c in ordered], y=[c.value(f"{split}/{y_metric}") for c in ordered],
            mode="lines+markers", name=front.label, line={"dash": "dot"},
            text=[f"{front.label} candidate-{c.number} (version {c.version})" for c in ordered], hoverinfo="text+x+y",
        ))  # fmt: skip
    figure.update_layout(
        title=f"{y_metric} against {x_metric}, {'validation' if split == 'val' else 'test (held out)'}: the fronts overlaid",
        xaxis_title=axis_label(x_metric, x_mode), yaxis_title=axis_label(y_metric, y_mode), template="plotly_white", height=460,
    )  # fmt: skip
    return figure


def write_comparison(path: Path, fronts: list[SweepFront], table: pd.DataFrame, given: dict[str, float] | None = None) -> Path:
    """An offline HTML page: the hypervolume table, the reference points, the overlays."""
    references = {split: common_reference(fronts, split, given) for split in SPLITS}
    stated = "; ".join(
        f"{split}: " + ", ".join(f"{m} {v:g}" for (m, _), v in zip(fronts[0].objectives, references[split])) for split in SPLITS
    )
    figures = [
        _overlay(fronts, split, pair).to_html(full_html=False, include_plotlyjs=False)
        for pair in itertools.combinations(fronts[0].objectives, 2)
        for split in SPLITS
    ]
    stores = "".join(f"<li>{html.escape(f.label)}: registered model {html.escape(f.name)} in {html.escape(f.tracking_uri)}</li>" for f in fronts)
    body = f"""
<h1>ethicsweep comparison: {html.escape(', '.join(f.label for f in fronts))}</h1>
<p>Hypervolume of each sweep's registered front (its candidate versions), against one
reference point per split (the worst of the sweeps' own unless given): {html.escape(stated)}.
Higher is better.</p>
{html_table(table)}
{''.join(f'<div class="figure">{f}</div>' for f in figures)}
<h2>Stores</h2><ul>{stores}</ul>
"""
    path.write_text(html_page("ethicsweep comparison", body), encoding="utf-8")
    return path
