"""The sweep's HTML report: one self-contained file (plotly.js inline, opens offline).

Every string that comes from the user or the data (names, columns, groups, errors) is
HTML-escaped before it reaches the page.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from ethicsweep.objectives import METRIC_DIRECTIONS
from ethicsweep.spec import GovernanceSpec


@dataclass(frozen=True)
class ReportContext:
    """What the report describes besides the trial table."""

    sweep: str
    dataset: str
    sensitive: tuple[str, ...]
    group_names: tuple[str, ...]
    objectives: list[tuple[str, str]]  # (metric, "max" | "min")
    tracking_uri: str
    wall_seconds: float
    provenance: dict[str, str]
    governance: GovernanceSpec = GovernanceSpec()
    notes: tuple[str, ...] = ()


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _label(metric: str, mode: str) -> str:
    return f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def _front_figure(trials: pd.DataFrame, front: pd.DataFrame, split: str, objectives: list[tuple[str, str]]) -> go.Figure:
    (y_metric, y_mode), (x_metric, x_mode) = objectives[0], objectives[1]
    figure = go.Figure()
    if split == "val":
        others = trials[(trials["status"] == "ok") & (trials["front_rank"] != 0)]
        figure.add_trace(
            go.Scatter(
                x=others[f"val/{x_metric}"], y=others[f"val/{y_metric}"], mode="markers", name="other trials",
                marker={"color": "#9aa5b1", "size": 7}, text=others["trial_id"],
                hovertemplate="trial %{text}<br>%{x:.4f}, %{y:.4f}<extra></extra>",
            )
        )
    ordered = front.sort_values(f"{split}/{x_metric}")
    figure.add_trace(
        go.Scatter(
            x=ordered[f"{split}/{x_metric}"], y=ordered[f"{split}/{y_metric}"],
            mode="markers+lines+text" if split == "val" else "markers+text",
            name="front models", text=[c.removeprefix("candidate-") for c in ordered["candidate"]],
            customdata=ordered[["candidate", "trial_id"]], textposition="top center",
            marker={"color": "#d1495b", "size": 10}, line={"dash": "dot", "color": "#d1495b"},
            hovertemplate="%{customdata[0]} (trial %{customdata[1]})<br>%{x:.4f}, %{y:.4f}<extra></extra>",
        )
    )
    title = (
        "validation: every trial; the front highlighted, numbered by candidate"
        if split == "val"
        else "test (held out): the same front models, numbered by candidate"
    )
    figure.update_layout(
        title=title, xaxis_title=_label(x_metric, x_mode), yaxis_title=_label(y_metric, y_mode),
        template="plotly_white", height=460, margin={"t": 50, "l": 60, "r": 20, "b": 50},
    )
    return figure


def _drivers_table(front: pd.DataFrame) -> str:
    columns = [c for c in front.columns if c.startswith(("grad_share/", "loss/", "lambda/"))]
    if not columns:
        return "<p>No per-term values were reported.</p>"
    return _table(front[["candidate", *sorted(columns)]])


def _governance_html(governance: GovernanceSpec, front: pd.DataFrame) -> str:
    parts = [
        f"<p><b>Rationale.</b> {html.escape(governance.rationale) or '(none given)'}</p>",
        f"<p><b>Owner.</b> {html.escape(governance.owner) or '(none given)'}</p>",
    ]
    if not governance.acceptable_risk:
        return "".join(parts) + "<p>No acceptable-risk bounds were stated.</p>"
    rows = {"candidate": list(front["candidate"])}
    for metric, bound in governance.acceptable_risk.items():
        sign = "<=" if METRIC_DIRECTIONS[metric] == "min" else ">="
        rows[f"test {metric} {sign} {bound:g}"] = [
            f"{row[f'test/{metric}']:.4f} {'met' if governance.risk_met(metric, row[f'test/{metric}']) else 'NOT met'}"
            for _, row in front.iterrows()
        ]
    return "".join(parts) + _table(pd.DataFrame(rows))


def write_report(path: Path, trials: pd.DataFrame, front: pd.DataFrame, context: ReportContext) -> Path:
    """Write the report to ``path`` and return it.

    ``trials`` has one row per trial (with ``front_rank``); ``front`` has the front's rows in
    candidate order with ``candidate``, ``version`` and ``val/*`` and ``test/*`` metrics.
    """
    objectives = context.objectives
    figures = []
    if len(objectives) >= 2 and len(front):
        for split in ("val", "test"):
            figures.append(_front_figure(trials, front, split, objectives).to_html(full_html=False, include_plotlyjs=False))
    metrics = list(METRIC_DIRECTIONS)
    param_columns = [c for c in front.columns if c.startswith("param:")]
    front_table = front[["candidate", "version", "trial_id", *param_columns]].rename(columns=lambda c: c.removeprefix("param:"))
    comparison = pd.DataFrame(
        {
            "candidate": [c for c in front["candidate"] for _ in (0, 1)],
            "split": ["validation", "test"] * len(front),
            **{m: [row[f"{s}/{m}"] for _, row in front.iterrows() for s in ("val", "test")] for m in metrics},
        }
    )
    ok = int((trials["status"] == "ok").sum())
    failed = trials[trials["status"] != "ok"]
    summary = pd.DataFrame(
        {
            "item": ["data set", "sensitive columns", "groups", "objectives", "trials", "wall time", "MLflow tracking URI",
                     *context.provenance.keys()],
            "value": [context.dataset, ", ".join(context.sensitive), ", ".join(context.group_names),
                      ", ".join(_label(m, d) for m, d in objectives), f"{ok} finished, {len(failed)} failed",
                      f"{context.wall_seconds:.0f} s", context.tracking_uri, *(v or "(none)" for v in context.provenance.values())],
        }
    )  # fmt: skip
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in context.notes)
    drivers = _drivers_table(front)
    failures = _table(failed[["trial_id", "error"]]) if len(failed) else "<p>None.</p>"
    body = f"""
<h1>ethicsweep report: {html.escape(context.sweep)}</h1>
{_table(summary)}
<h2>Pareto front</h2>
<p>The front is computed on the validation split. Its models were then re-evaluated on the
untouched test split; a model's test point can fall off the validation front.</p>
{''.join(f'<div class="figure">{f}</div>' for f in figures) or '<p>Fewer than two objectives or no front: nothing to plot.</p>'}
<h2>Front models</h2>
{_table(front_table)}
<h3>Metrics on validation and test</h3>
{_table(comparison)}
<h2>What drove each model</h2>
<p>Each loss part's share of the gradient norm, its mean value in the last epoch, and the
multiplier of each constrained term (last epoch, training split).</p>
{drivers}
<h2>Governance</h2>
{_governance_html(context.governance, front)}
<h2>Notes</h2>
<ul>{notes or '<li>None.</li>'}</ul>
<h2>Failed trials</h2>
{failures}
<p class="foot">Metric definitions: the ethicsweep README, section "Metrics". Every trial: trials.csv beside this file.</p>
"""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ethicsweep: {html.escape(context.sweep)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1f2933; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }}
th, td {{ border: 1px solid #cbd2d9; padding: 0.25rem 0.6rem; text-align: left; white-space: nowrap; }}
.scroll {{ overflow-x: auto; }}
th {{ background: #f0f4f8; }}
.figure {{ margin-bottom: 1rem; }}
.foot {{ color: #616e7c; font-size: 0.85rem; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>{body}</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
