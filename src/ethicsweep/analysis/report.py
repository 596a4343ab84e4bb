"""The sweep's HTML report: one self-contained file (plotly.js inline, opens offline).

Every string that comes from the user or the data (names, columns, groups, errors) is
HTML-escaped before it reaches the page.
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from ethicsweep.objectives import METRIC_DIRECTIONS
from ethicsweep.spec import GovernanceSpec, TrainConfig


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
    hypervolume: dict[str, float] = field(default_factory=dict)  # split -> hypervolume of the front models
    reference: dict[str, list[float]] = field(default_factory=dict)  # split -> reference point, in metric units
    split_rows: dict[str, int] = field(default_factory=dict)  # split -> rows
    group_tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # trial_id -> per-group table on test
    configs: dict[str, TrainConfig] = field(default_factory=dict)  # trial_id -> resolved training config


def _fmt(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _reference_text(objectives: list[tuple[str, str]], reference: list[float]) -> str:
    return ", ".join(f"{metric} {value:g}" for (metric, _), value in zip(objectives, reference))


def axis_label(metric: str, mode: str) -> str:
    return f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def _front_figure(trials: pd.DataFrame, front: pd.DataFrame, split: str, pair: tuple[tuple[str, str], tuple[str, str]]) -> go.Figure:
    (y_metric, y_mode), (x_metric, x_mode) = pair
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
        f"{y_metric} against {x_metric}, validation: every trial; the front highlighted, numbered by candidate"
        if split == "val"
        else f"{y_metric} against {x_metric}, test (held out): the same front models, numbered by candidate"
    )
    figure.update_layout(
        title=title, xaxis_title=axis_label(x_metric, x_mode), yaxis_title=axis_label(y_metric, y_mode),
        template="plotly_white", height=460, margin={"t": 50, "l": 60, "r": 20, "b": 50},
    )
    return figure


def _parallel_figure(trials: pd.DataFrame, objectives: list[tuple[str, str]]) -> go.Figure | None:
    """Parallel coordinates of every finished trial: its searched parameters, then its
    validation objectives; front trials in red."""
    done = trials[trials["status"] == "ok"]
    if done.empty:
        return None
    dimensions = []
    for column in [c for c in done.columns if c.startswith("param:")]:
        values = done[column]
        if pd.api.types.is_numeric_dtype(values):
            dimensions.append({"label": column.removeprefix("param:"), "values": values.astype(float)})
        else:
            levels = sorted(values.astype(str).unique())
            dimensions.append({"label": column.removeprefix("param:"), "values": values.astype(str).map(levels.index),
                               "tickvals": list(range(len(levels))), "ticktext": levels})  # fmt: skip
    for metric, mode in objectives:
        dimensions.append({"label": f"val {metric} ({mode})", "values": done[f"val/{metric}"].astype(float)})
    on_front = (done["front_rank"] == 0).astype(int)
    figure = go.Figure(go.Parcoords(
        dimensions=dimensions, line={"color": on_front, "colorscale": [[0, "#9aa5b1"], [1, "#d1495b"]], "cmin": 0, "cmax": 1},
    ))  # fmt: skip
    figure.update_layout(title="every finished trial: searched parameters and validation objectives (red: on the front)",
                         template="plotly_white", height=460, margin={"t": 80, "l": 60, "r": 60, "b": 30})  # fmt: skip
    return figure


def write_front_png(path: Path, trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, str]]) -> Path:
    """The front of the first two objectives on validation and on test, as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (y_metric, y_mode), (x_metric, x_mode) = objectives[0], objectives[1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=False)
    others = trials[(trials["status"] == "ok") & (trials["front_rank"] != 0)]
    for ax, split in zip(axes, ("val", "test")):
        if split == "val":
            ax.scatter(others[f"val/{x_metric}"], others[f"val/{y_metric}"], c="#9aa5b1", s=18, label="other trials")
        ordered = front.sort_values(f"{split}/{x_metric}")
        ax.plot(ordered[f"{split}/{x_metric}"], ordered[f"{split}/{y_metric}"], "o:", c="#d1495b", label="front models")
        for _, row in ordered.iterrows():
            ax.annotate(row["candidate"].removeprefix("candidate-"), (row[f"{split}/{x_metric}"], row[f"{split}/{y_metric}"]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
        ax.set_title("validation" if split == "val" else "test (held out)")
        ax.set_xlabel(axis_label(x_metric, x_mode))
        ax.set_ylabel(axis_label(y_metric, y_mode))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _term_summary(config: TrainConfig) -> str:
    parts = []
    for term in config.terms:
        how = f"constraint <= {term.bound:g}" if term.mode == "constraint" else f"weight {term.weight:.4g}"
        parts.append(f"{term.key} ({how})")
    if config.privacy.dp_sgd:
        parts.append("DP-SGD")
    return ", ".join(parts) or "none"


def _limitations(row: pd.Series, context: ReportContext, config: TrainConfig | None) -> list[str]:
    """What a reader should know before deploying this candidate, found from the sweep."""
    found = []
    if row.get("test_front_rank", 0) > 0:
        found.append("on test it is dominated by another candidate: its place on the front was fitted to validation")
    for metric in context.governance.acceptable_risk:
        if not context.governance.risk_met(metric, row[f"test/{metric}"]):
            found.append(f"test {metric} {row[f'test/{metric}']:.4f} breaks the acceptable-risk bound {context.governance.acceptable_risk[metric]:g}")
    undefined = [m for m in METRIC_DIRECTIONS if f"test/{m}" in row and isinstance(row[f"test/{m}"], float) and math.isnan(row[f"test/{m}"])]
    if undefined:
        found.append(f"undefined on test: {', '.join(undefined)}")
    if config is not None and not config.privacy.dp_sgd:
        found.append("trained without DP-SGD: no formal privacy guarantee (epsilon is infinite)")
    found.append("the fairness metrics cover only the groups formed from " + ", ".join(context.sensitive) + "; other groups were not measured")
    found += [f"{n}" for n in context.notes]
    if context.governance.limitations:
        found.append(context.governance.limitations)
    return found


def _model_cards(front: pd.DataFrame, context: ReportContext) -> str:
    cards = []
    sizes = ", ".join(f"{split} {rows}" for split, rows in context.split_rows.items())
    for _, row in front.iterrows():
        config = context.configs.get(row["trial_id"])
        objectives = "; ".join(f"{m} {row[f'test/{m}']:.4f}" for m, _ in context.objectives)
        constraints = row.get("constraints", "") or "no constrained fairness term"
        items = [
            ("Intended use", context.governance.intended_use or "(not stated in the spec's governance block)"),
            ("Data", f"{context.dataset} (SHA-256 {context.provenance.get('ethicsweep.data_sha256', '?')}); rows: {sizes}; "
                     f"sensitive columns: {', '.join(context.sensitive)}; groups: {', '.join(context.group_names)}"),
            ("Model", (f"{config.model.kind}" + (f", {config.model.layers} × {config.model.hidden} hidden units" if config.model.kind == "mlp" else "")
                       + f", threshold {config.model.threshold:g}, abstain {config.model.abstain}; terms: {_term_summary(config)}") if config else "?"),
            ("Provenance", f"registered version {row['version']}, trial {row['trial_id']}, MLflow run {row['run_id']}; "
                           f"spec SHA-256 {context.provenance.get('ethicsweep.spec_sha256', '?')}, seed {context.provenance.get('ethicsweep.seed', '?')}"),
            ("Rationale", context.governance.rationale or "(none given)"),
            ("Stakeholder weights", ", ".join(f"{t.key}: {t.group_weights}" for t in (config.terms if config else []) if getattr(t, "group_weights", None))
             + (f"; harm: {config.harm.group_weights}" if config and config.harm.group_weights else "") or "none"),
            ("Test objectives", objectives),
            ("Constraints", constraints),
        ]  # fmt: skip
        listed = "".join(f"<tr><th>{html.escape(k)}</th><td class='wrap'>{html.escape(v)}</td></tr>" for k, v in items)
        limits = "".join(f"<li>{html.escape(x)}</li>" for x in _limitations(row, context, config))
        groups = context.group_tables.get(row["trial_id"])
        group_html = html_table(groups) if groups is not None else ""
        cards.append(
            f"<details><summary><b>{html.escape(row['candidate'])}</b> — version {html.escape(str(row['version']))}: {html.escape(objectives)}</summary>"
            f"<table>{listed}</table><p><b>Limitations</b></p><ul>{limits}</ul>"
            f"<p><b>Per group on test</b> (rates with 95% bootstrap intervals, 200 resamples)</p>{group_html}</details>"
        )
    return "".join(cards)


def _drivers_table(front: pd.DataFrame) -> str:
    columns = [c for c in front.columns if c.startswith(("grad_share/", "loss/", "lambda/"))]
    if not columns:
        return "<p>No per-term values were reported.</p>"
    return html_table(front[["candidate", *sorted(columns)]])


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
    return "".join(parts) + html_table(pd.DataFrame(rows))


ABLATION_MARK = "<!-- ethicsweep:ablations -->"


def add_ablation(path: Path, key: str, title: str, table: pd.DataFrame) -> None:
    """Insert (or replace) the ablation table ``key`` in the report at ``path``, at the
    place :func:`write_report` marks for it. ``title`` and every cell are escaped."""
    text = path.read_text(encoding="utf-8")
    if ABLATION_MARK not in text:
        raise ValueError(f"{path} has no place for ablations (written by an older ethicsweep)")
    start, end = f"<!-- ablation {html.escape(key)} -->", f"<!-- /ablation {html.escape(key)} -->"
    if start in text:
        text = text[: text.index(start)] + text[text.index(end) + len(end) :]
    block = f"{start}<h4>{html.escape(title)}</h4>{html_table(table)}{end}\n"
    path.write_text(text.replace(ABLATION_MARK, block + ABLATION_MARK, 1), encoding="utf-8")


def write_report(path: Path, trials: pd.DataFrame, front: pd.DataFrame, context: ReportContext) -> Path:
    """Write the report to ``path`` and return it.

    ``trials`` has one row per trial (with ``front_rank``); ``front`` has the front's rows in
    candidate order with ``candidate``, ``version`` and ``val/*`` and ``test/*`` metrics.
    """
    objectives = context.objectives
    figures = []
    if len(objectives) >= 2 and len(front):
        for pair in itertools.combinations(objectives, 2):
            for split in ("val", "test"):
                figures.append(_front_figure(trials, front, split, pair).to_html(full_html=False, include_plotlyjs=False))
    parallel = _parallel_figure(trials, objectives)
    metrics = list(METRIC_DIRECTIONS)
    param_columns = [c for c in front.columns if c.startswith("param:")]
    front_table = front[["candidate", "version", "trial_id", *param_columns]].rename(columns=lambda c: c.removeprefix("param:"))
    if "test_front_rank" in front:
        front_table["on the test front"] = ["yes" if r == 0 else "no (dominated on test)" for r in front["test_front_rank"]]
    if "constraints" in front:
        front_table["constraints"] = [c or "none constrained" for c in front["constraints"]]
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
                     *(f"hypervolume ({split})" for split in context.hypervolume), *context.provenance.keys()],
            "value": [context.dataset, ", ".join(context.sensitive), ", ".join(context.group_names),
                      ", ".join(axis_label(m, d) for m, d in objectives), f"{ok} finished, {len(failed)} failed",
                      f"{context.wall_seconds:.0f} s", context.tracking_uri,
                      *(f"{v:.6f} (reference point: {_reference_text(objectives, context.reference.get(split, []))})" for split, v in context.hypervolume.items()),
                      *(v or "(none)" for v in context.provenance.values())],
        }
    )  # fmt: skip
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in context.notes)
    drivers = _drivers_table(front)
    failures = html_table(failed[["trial_id", "error"]]) if len(failed) else "<p>None.</p>"
    body = f"""
<h1>ethicsweep report: {html.escape(context.sweep)}</h1>
{html_table(summary)}
<h2>Pareto front</h2>
<p>The front is computed on the validation split. Its models were then re-evaluated on the
untouched test split; a model's test point can fall off the validation front.</p>
{''.join(f'<div class="figure">{f}</div>' for f in figures) or '<p>Fewer than two objectives or no front: nothing to plot.</p>'}
<p>Hypervolume: the area (volume) the front dominates, bounded by the reference point of
the summary table (README, "Hypervolume"; higher is better).</p>
<h2>Every trial</h2>
{f'<div class="figure">{parallel.to_html(full_html=False, include_plotlyjs=False)}</div>' if parallel else '<p>No finished trial.</p>'}
<h2>Front models</h2>
{html_table(front_table)}
<h3>Metrics on validation and test</h3>
{html_table(comparison)}
<h2>What drove each model</h2>
<p>Each loss part's share of the gradient norm, its mean value in the last epoch, and the
multiplier of each constrained term (last epoch, training split).</p>
{drivers}
<h3>Ablations</h3>
<p>Run <code>ethicsweep ablate MODEL</code> to retrain a candidate once per term with that
term removed; its table appears here.</p>
{ABLATION_MARK}
<h2>Governance</h2>
{_governance_html(context.governance, front)}
<h2>Model cards</h2>
<p>One per candidate: intended use, data and provenance, rationale, stakeholder weights,
limitations, and its rates per group on test.</p>
{_model_cards(front, context) or '<p>No candidate.</p>'}
<h2>Notes</h2>
<ul>{notes or '<li>None.</li>'}</ul>
<h2>Failed trials</h2>
{failures}
<p class="foot">Metric definitions: the ethicsweep README, section "Metrics". Every trial: trials.csv beside this file.</p>
"""
    path.write_text(html_page(f"ethicsweep: {context.sweep}", body), encoding="utf-8")
    return path


def html_page(title: str, body: str) -> str:
    """A whole offline page: ``title`` (escaped here), the report's style, plotly.js inline,
    and ``body`` (HTML, already escaped)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1f2933; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }}
th, td {{ border: 1px solid #cbd2d9; padding: 0.25rem 0.6rem; text-align: left; white-space: nowrap; }}
.scroll {{ overflow-x: auto; }}
th {{ background: #f0f4f8; }}
.figure {{ margin-bottom: 1rem; }}
.foot {{ color: #616e7c; font-size: 0.85rem; }}
td.wrap {{ white-space: normal; }}
details {{ margin: 0.4rem 0; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>{body}</body></html>"""
