"""The ``ethicsweep`` command line. Thin: it validates input, shows progress and calls the
data, search and analysis packages. A user's mistake prints one line and exits with 2."""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Ray Tune's own tables would fight our progress bar
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import typer  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from ethicsweep import __version__  # noqa: E402
from ethicsweep.errors import EthicsweepError  # noqa: E402
from ethicsweep.spec import SweepSpec, load_spec, parse_spec  # noqa: E402

# Rich wraps at 80 columns when output is not a terminal (a log, CI): wide enough for a table.
console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

app = typer.Typer(
    name="ethicsweep",
    help=(
        "Train models whose loss carries fairness penalties, search the trade-off between "
        "accuracy and fairness with NSGA-II on Ray Tune, and record every trial and the "
        "Pareto-front models in MLflow.\n\n"
        "Start with `ethicsweep demo`; then write a spec (see configs/) and run "
        "`ethicsweep sweep SPEC.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

AddressOption = Annotated[
    str | None,
    typer.Option("--address", metavar="ADDRESS", help="Ray cluster to join: `auto`, `ray://host:10001` or `host:6379`. Default: start Ray on this machine."),
]
TrackingOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", metavar="URI", help="MLflow tracking URI, e.g. `http://mlflow:5000`. Default: the spec's, else `sqlite:///<sweep dir>/mlflow.db`."),
]
StorageOption = Annotated[
    str | None,
    typer.Option("--storage-path", metavar="URI", help="Ray Tune's storage for trial checkpoints, which every node must reach on a multi-node cluster: `s3://bucket/path`, `gs://bucket/path` or a shared (NFS) directory. Default: the spec's `storage_path`, else the sweep's directory."),
]
CpusOption = Annotated[float | None, typer.Option("--cpus-per-trial", min=0.01, metavar="N", help="CPUs per trial (overrides search.cpus_per_trial; default 1).")]
GpusOption = Annotated[float | None, typer.Option("--gpus-per-trial", min=0.0, metavar="N", help="GPUs per trial; fractions share a GPU, e.g. 0.25 (overrides search.gpus_per_trial; default 0).")]
OutputOption = Annotated[
    Path | None,
    typer.Option("--output-dir", metavar="DIR", help="Where sweeps are written (`<dir>/<sweep name>/`). Default: the spec's `output_dir`, `./ethicsweep-runs`."),
]


def _with_overrides(spec: SweepSpec, overrides: dict[str, Any], source: str) -> SweepSpec:
    """Re-validate ``spec`` with command-line values set (dotted paths; None means unset)."""
    document = spec.model_dump(mode="json")
    document["train"].pop("seed")  # follows the top-level seed
    for path, value in overrides.items():
        if value is None:
            continue
        node = document
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return parse_spec(document, source=source)


def _cluster_overrides(storage_path: str | None, cpus: float | None, gpus: float | None) -> dict[str, Any]:
    return {"storage_path": storage_path, "search.cpus_per_trial": cpus, "search.gpus_per_trial": gpus}


def _quiet_libraries() -> None:
    for name in ("mlflow", "alembic", "ray", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Opacus, on every DP-SGD model the driver builds to check a spec; the README states both points
    warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)


ResumeOption = Annotated[
    bool,
    typer.Option("--resume", help="Continue the sweep's latest execution (interrupted, or its driver killed) from Ray Tune's saved state instead of starting a new one: no finished trial runs again, and it ends with the spec's number of trials. The spec must be unchanged."),
]


def _run(spec: SweepSpec, address: str | None, tracking_uri: str | None, resume: bool = False) -> None:
    from ethicsweep.analysis import analyze_sweep
    from ethicsweep.data import prepare
    from ethicsweep.search import TrialEvent, run_sweep

    _quiet_libraries()
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in spec.search.objectives)
    console.print(f"[bold]ethicsweep {__version__}[/] sweep [bold]{spec.name}[/]: {spec.search.num_trials} trials, "
                  f"{spec.search.searcher}, objectives {objectives}")  # fmt: skip
    with console.status(f"Loading and preparing {spec.data.dataset}..."):
        data = prepare(spec.data, spec.seed)
    console.print(
        f"data: {data.name}, {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test rows, "
        f"{len(data.feature_names)} features, groups: {', '.join(data.group_names)}"
    )
    metrics = [o.metric for o in spec.search.objectives]
    first = metrics[0]
    with Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("trials", total=spec.search.num_trials, last="starting Ray...")

        def on_event(event: TrialEvent) -> None:
            waiting = f" (MLflow not answering: {event.unwritten} writes held, retried)" if event.unwritten else ""
            if event.kind == "tracking":
                held = f"{event.unwritten} writes held; retrying for {event.result['left_s']:.0f} s more"
                progress.update(task, last=f"MLflow not answering: {held}")
                if not console.is_terminal:
                    progress.console.print(f"MLflow not answering ({escape(event.result['error'])}): {held}")
            elif event.kind == "epoch":
                value = event.result.get(f"val/{first}", float("nan"))
                # completed too: after --resume the first epoch shows the trials already done
                progress.update(task, completed=event.finished, last=f"trial {event.trial_id} epoch {event.epoch}: val {first} {value:.4f}{waiting}")
            else:
                progress.update(task, completed=event.finished, last=f"trial {event.trial_id} {'done' if event.kind == 'done' else 'FAILED'}{waiting}")
                if not console.is_terminal:  # a log (CI, `ray job submit`): one line per trial, as it ends
                    values = ", ".join(f"val {m} {event.result.get(f'val/{m}', float('nan')):.4f}" for m in metrics)
                    progress.console.print(f"[{event.finished}/{spec.search.num_trials}] trial {event.trial_id} "
                                           f"{'done' if event.kind == 'done' else 'FAILED'}: {values}{waiting}")  # fmt: skip

        outcome = run_sweep(spec, data, address=address, tracking_uri=tracking_uri, on_event=on_event, resume=resume)
    finished = int((outcome.trials["status"] == "ok").sum()) if len(outcome.trials) else 0
    if outcome.interrupted:
        errors.print(
            f"interrupted: {len(outcome.trials)} of {spec.search.num_trials} trials ended ({finished} finished); "
            f"they are recorded in MLflow ({outcome.tracking_uri}, parent run KILLED); nothing was registered. "
            "Continue it with the same command and --resume."
        )
        raise typer.Exit(130)
    if finished == 0:
        reasons = sorted(set(outcome.trials["error"])) if len(outcome.trials) else ["no trial ran"]
        errors.print(f"[red]error:[/] every trial failed, so there is no front; first reason: {escape(reasons[0])}")
        raise typer.Exit(1)
    with console.status("Evaluating the front on the test split and registering it in MLflow..."):
        analysis = analyze_sweep(spec, data, outcome)
    _print_front(analysis.front, spec)
    failed = int((analysis.trials["status"] != "ok").sum())
    console.print(f"{len(analysis.trials) - failed} trials finished, {failed} failed, in {outcome.wall_seconds:.0f} s.")
    console.print(f"report:     {analysis.report}", soft_wrap=True)
    console.print(f"trials:     {analysis.trials_csv}", soft_wrap=True)
    console.print(f"MLflow:     {outcome.tracking_uri} (experiment {spec.name!r}, registered model {spec.name!r})", soft_wrap=True)
    if outcome.tracking_uri.startswith("sqlite:"):
        mlflow = Path(sys.executable).with_name("mlflow")
        command = str(mlflow) if mlflow.exists() else "mlflow"
        console.print(f"browse it:  {command} ui --backend-store-uri {outcome.tracking_uri}", soft_wrap=True)


def _print_front(front: Any, spec: SweepSpec) -> None:
    table = Table(title=f"Pareto front of {spec.name}: found on validation, re-evaluated on test")
    metrics = [o.metric for o in spec.search.objectives]
    table.add_column("alias", no_wrap=True)
    table.add_column("version", justify="right")
    for split in ("val", "test"):
        for metric in metrics:
            table.add_column(f"{split} {metric}", justify="right")
    for _, row in front.iterrows():
        values = [f"{row[f'{s}/{m}']:.4f}" for s in ("val", "test") for m in metrics]
        table.add_row(row["candidate"], str(row["version"]), *values)
    console.print(table)


@app.command()
def demo(
    trials: Annotated[int | None, typer.Option(min=1, metavar="N", help="Number of trials (default 64).")] = None,
    seed: Annotated[int | None, typer.Option(min=0, metavar="S", help="Seed for splits, searcher and training (default 0).")] = None,
    output_dir: OutputOption = None,
    address: AddressOption = None,
    tracking_uri: TrackingOption = None,
    storage_path: StorageOption = None,
    cpus_per_trial: CpusOption = None,
    gpus_per_trial: GpusOption = None,
    resume: ResumeOption = False,
) -> None:
    """Run a real sweep on the bundled UCI Adult data (sex as the sensitive attribute).

    An MLP is trained with binary cross-entropy plus demographic-parity and equalized-odds
    penalties; NSGA-II searches their weights, the learning rate, the width and the
    epochs for the best trade-offs of accuracy against dp_gap. About two minutes on a 2-core laptop.
    Prints the Pareto front and where the report and the MLflow store are.
    """
    document = yaml.safe_load(resources.files("ethicsweep").joinpath("demo.yaml").read_text())
    spec = _with_overrides(
        parse_spec(document, "demo spec"),
        {"search.num_trials": trials, "seed": seed, "output_dir": str(output_dir) if output_dir else None,
         **_cluster_overrides(storage_path, cpus_per_trial, gpus_per_trial)},
        "demo options",
    )
    _run(spec, address, tracking_uri, resume)


@app.command()
def sweep(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="The sweep spec (YAML). Examples: configs/.")],
    output_dir: OutputOption = None,
    address: AddressOption = None,
    tracking_uri: TrackingOption = None,
    storage_path: StorageOption = None,
    cpus_per_trial: CpusOption = None,
    gpus_per_trial: GpusOption = None,
    resume: ResumeOption = False,
) -> None:
    """Run the sweep a spec describes: train its trials on Ray, log them to MLflow, register
    the Pareto front and write the report.

    The spec is checked in full before anything starts; a mistake names the field, the
    value and what is allowed. An interrupted sweep continues with `--resume`.
    """
    spec = load_spec(spec_file)
    overrides = {"output_dir": str(output_dir) if output_dir else None, **_cluster_overrides(storage_path, cpus_per_trial, gpus_per_trial)}
    if any(v is not None for v in overrides.values()):
        spec = _with_overrides(spec, overrides, "command-line options")
    _run(spec, address, tracking_uri, resume)


def _sweep_store(sweep: str, tracking_uri: str | None) -> tuple[str, str]:
    """(registered model name, tracking URI) of a sweep given as its directory, its spec, or
    its registered model name (then with --tracking-uri)."""
    from ethicsweep.search.tracking import default_tracking_uri

    path = Path(sweep)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        spec = load_spec(path)
        return spec.name, tracking_uri or spec.tracking_uri or default_tracking_uri(spec.sweep_dir.resolve())
    if path.is_dir():
        return path.resolve().name, tracking_uri or default_tracking_uri(path.resolve())
    if tracking_uri is None and "MLFLOW_TRACKING_URI" not in os.environ:
        raise EthicsweepError(
            f"SWEEP: {sweep!r} is neither a sweep directory nor a spec file; to name a registered model, also pass --tracking-uri"
        )
    return sweep, tracking_uri or os.environ["MLFLOW_TRACKING_URI"]


@app.command()
def select(
    sweep: Annotated[str, typer.Argument(metavar="SWEEP", help="The sweep: its directory (`ethicsweep-runs/NAME`), its spec file, or its registered model name with --tracking-uri.")],
    where: Annotated[list[str] | None, typer.Option("--where", metavar="RULE", help="A rule every deployable model meets, e.g. `dp_gap <= 0.05`; repeat for more. Metrics are read on --split unless written `val/NAME` or `test/NAME`.")] = None,
    prefer: Annotated[str | None, typer.Option("--prefer", metavar="METRIC", help="Choose the best value of this metric (in its natural direction). Default method when --method is not given; default metric: the sweep's first objective.")] = None,
    method: Annotated[str | None, typer.Option("--method", metavar="METHOD", help="Instead of --prefer, trade the sweep's objectives off: `knee` (smallest sum of normalized objectives), `asf` (weighted Chebyshev distance to the ideal), `pseudo-weights` (pymoo).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", metavar="W", help="Objective weights for asf and pseudo-weights: `accuracy=0.7,dp_gap=0.3` or `0.7,0.3`. Default: equal.")] = None,
    split: Annotated[str, typer.Option("--split", metavar="SPLIT", help="Which recorded metrics the rules and methods read: `test` (held out) or `val`.")] = "test",
    alias: Annotated[str, typer.Option("--alias", metavar="ALIAS", help="The MLflow alias set on the chosen version.")] = "champion",
    tracking_uri: TrackingOption = None,
) -> None:
    """Choose the model to deploy from a sweep's registered Pareto front, by stated rules.

    Every candidate (the versions aliased `candidate-<k>`) is checked against the `--where`
    rules; among those that meet them all, `--prefer` or `--method` chooses one, and the
    chosen version gets the alias (default `champion`). A table explains why each other
    candidate lost. When no candidate meets every rule, the closest are named and the exit
    status is 1.

    Example: `ethicsweep select ethicsweep-runs/adult-demo --where "dp_gap <= 0.05" --prefer accuracy`
    """
    from ethicsweep.analysis.registry import front_candidates
    from ethicsweep.analysis.selection import METHODS, SPLITS, Rule, SelectionError, metric_key, parse_weights
    from ethicsweep.analysis.selection import select as choose
    from ethicsweep.search.tracking import existing_store

    _quiet_libraries()
    if split not in SPLITS:
        raise SelectionError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if method is not None and method not in METHODS[1:]:
        raise SelectionError(f"--method {method!r}: use one of {', '.join(METHODS[1:])} (or --prefer METRIC)")
    if method is not None and prefer is not None:
        raise SelectionError("--prefer and --method exclude each other: give one")
    if weights is not None and method not in ("asf", "pseudo-weights"):
        raise SelectionError("--weights applies to --method asf or pseudo-weights")
    if not alias or not all(c.isalnum() or c in "-_" for c in alias) or alias.startswith("candidate-") or alias.lower() == "latest":
        raise SelectionError(f"--alias {alias!r}: use letters, digits, '-' and '_', not 'latest' nor candidate-<k> (those name the front)")
    rules = [Rule.parse(text, split) for text in where or []]
    preferred = metric_key(prefer, split, "--prefer") if prefer else None
    name, uri = _sweep_store(sweep, tracking_uri)
    client = existing_store(uri)
    candidates, objectives = front_candidates(client, name)
    chosen = choose(candidates, rules, objectives, method or "prefer", preferred, parse_weights(weights, objectives) if method else None, split)

    shown = list(dict.fromkeys([*(f"{split}/{m}" for m, _ in objectives), *(r.key for r in rules), *([preferred] if preferred else [])]))
    table = Table(title=f"Candidates of {name} ({uri})")
    table.add_column("candidate", no_wrap=True)
    table.add_column("version", justify="right")
    for key in shown:
        table.add_column(key, justify="right")
    table.add_column("why")
    for c in candidates:
        mark = "[bold green]" if chosen.chosen is c else ""
        table.add_row(f"{mark}candidate-{c.number}", c.version, *(f"{c.value(k):.4f}" for k in shown), escape(chosen.reasons[c.version]))
    console.print(table)
    if chosen.chosen is None:
        closest = ", ".join(f"candidate-{c.number} (version {c.version}: {chosen.reasons[c.version]})" for c in chosen.closest)
        errors.print(f"[red]no candidate meets every rule[/] ({'; '.join(map(str, rules))}). Closest: {escape(closest)}", soft_wrap=True)
        raise typer.Exit(1)
    client.set_registered_model_alias(name, alias, chosen.chosen.version)
    console.print(f"chosen: candidate-{chosen.chosen.number}, version {chosen.chosen.version} of {name!r}; alias {alias!r} set.")
    console.print(f"load it: mlflow.pyfunc.load_model('models:/{name}@{alias}') with tracking URI {uri}", soft_wrap=True)


@app.command()
def compare(
    sweeps: Annotated[list[str], typer.Argument(metavar="SWEEP...", help="Two or more sweeps: each its directory, its spec file, or its registered model name with --tracking-uri.")],
    reference: Annotated[str | None, typer.Option("--reference", metavar="R", help="The reference point, e.g. `accuracy=0.76,dp_gap=0.2`. Default: per objective, the worst of the sweeps' own recorded reference points.")] = None,
    output: Annotated[Path, typer.Option("--output", metavar="FILE", help="Where to write the comparison page (HTML, opens offline).")] = Path("comparison.html"),
    tracking_uri: TrackingOption = None,
) -> None:
    """Compare the registered Pareto fronts of two or more sweeps with the same objectives:
    hypervolume on validation and test against one reference point, and the fronts overlaid.

    Example: `ethicsweep compare ethicsweep-runs/adult-demo ethicsweep-runs/adult-wide --output compare.html`
    """
    from ethicsweep.analysis.compare import hypervolumes, load_front, write_comparison
    from ethicsweep.search.tracking import existing_store

    _quiet_libraries()
    if len(sweeps) < 2:
        raise EthicsweepError(f"SWEEP: give two or more sweeps to compare, not {len(sweeps)}")
    given = _metric_values([item for item in (reference or "").split(",") if item.strip()], "--reference", "accuracy=0.76,dp_gap=0.2")
    stores = [_sweep_store(sweep, tracking_uri) for sweep in sweeps]
    if len(set(stores)) < len(stores):
        raise EthicsweepError(f"SWEEP: the same sweep is named twice ({', '.join(sweeps)})")
    unique = len({name for name, _ in stores}) == len(stores)
    fronts = [load_front(existing_store(uri), name, None if unique else sweep) for sweep, (name, uri) in zip(sweeps, stores)]
    table = hypervolumes(fronts, given)
    shown = Table(title="Registered fronts compared (hypervolume: higher is better; one reference point per split)")
    for column in table.columns:
        shown.add_column(str(column), justify="left" if column == "sweep" else "right")
    for row in table.itertuples(index=False):
        shown.add_row(*(f"{v:.6f}" if isinstance(v, float) else escape(str(v)) for v in row))
    console.print(shown)
    page = write_comparison(output, fronts, table, given)
    console.print(f"comparison: {page.resolve()}", soft_wrap=True)


def _number(value: Any, signed: bool = False) -> str:
    """A table cell: floats to 4 decimals (``+`` sign when ``signed``), NaN as ``n/a``,
    booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, float):
        return escape(str(value))
    if math.isnan(value):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _metric_values(items: list[str], option: str, example: str, nonnegative: bool = False) -> dict[str, float]:
    """``METRIC=VALUE`` items (an option's values) as {metric: value}; a one-line error
    naming ``option`` for an unknown metric or a value that is not a finite number
    (negative, when ``nonnegative``)."""
    from ethicsweep.objectives.metrics import METRIC_DIRECTIONS

    values: dict[str, float] = {}
    for item in items:
        metric, _, text = item.partition("=")
        metric = metric.strip()
        if metric not in METRIC_DIRECTIONS:
            raise EthicsweepError(f"{option} {item!r}: unknown metric {metric!r}; metrics: {', '.join(METRIC_DIRECTIONS)}")
        try:
            values[metric] = float(text)
        except ValueError:
            values[metric] = math.nan
        if not math.isfinite(values[metric]) or (nonnegative and values[metric] < 0):
            kind = "a number >= 0" if nonnegative else "a finite number"
            raise EthicsweepError(f"{option} {item!r}: write METRIC=VALUE with VALUE {kind}, e.g. {example}")
    return values


@app.command()
def audit(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A registered version: `NAME@ALIAS` or `NAME/VERSION` (a `models:/` prefix is allowed), e.g. `adult-demo@champion`.")],
    data: Annotated[Path, typer.Argument(metavar="DATA", help="Labelled data to audit on (.csv, .csv.gz or .parquet) with the model's raw columns, its label and its sensitive columns.")],
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, metavar="T", help="How much worse than recorded (absolute, in the metric's units) a metric may be before it breaches.")] = 0.02,
    tolerance_for: Annotated[list[str] | None, typer.Option("--tolerance-for", metavar="METRIC=T", help="A tolerance for one metric, e.g. `dp_gap=0.01`; repeat for more.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Also write the checks and the per-group table to this JSON file.")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", metavar="URI", help="The MLflow store that holds the model, e.g. `sqlite:///ethicsweep-runs/adult-demo/mlflow.db`. Default: $MLFLOW_TRACKING_URI.")] = None,
) -> None:
    """Score new labelled data with a registered model and compare every metric with the
    test metrics recorded for it (for monitoring jobs).

    Prints each metric recorded and now, the per-group table (counts and rates), and exits
    with status 1 when any metric is worse than recorded by more than its tolerance (or is
    undefined now), 0 otherwise.

    Example: `ethicsweep audit adult-demo@champion new.csv --tracking-uri sqlite:///ethicsweep-runs/adult-demo/mlflow.db`
    """
    import json
    import tempfile

    from ethicsweep.analysis.audit import audit as run_audit
    from ethicsweep.analysis.audit import model_files
    from ethicsweep.analysis.registry import download_model_files, resolve_version
    from ethicsweep.data.loaders import load_table
    from ethicsweep.search.tracking import existing_store

    _quiet_libraries()
    per_metric = _metric_values(tolerance_for or [], "--tolerance-for", "dp_gap=0.01", nonnegative=True)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise EthicsweepError("--tracking-uri: give the MLflow store that holds the model (or set MLFLOW_TRACKING_URI)")
    if json_out is not None and not json_out.parent.is_dir():
        raise EthicsweepError(f"--json {str(json_out)!r}: its directory {str(json_out.parent)!r} does not exist; give a file in an existing directory")
    if data.is_dir():
        raise EthicsweepError(f"DATA {str(data)!r} is a directory; give a .csv, .csv.gz or .parquet file")
    client = existing_store(uri)
    version = resolve_version(client, model)
    name = version.name
    recorded = {k.removeprefix("test/"): float(v) for k, v in version.tags.items() if k.startswith("test/")}
    with tempfile.TemporaryDirectory() as tmp:
        directory = download_model_files(client, version, tmp)
        described = model_files(directory)[2]
        with console.status(f"Scoring {data} with {name} version {version.version}..."):
            table = load_table(data, described["label"], described["positive_label"], field="DATA")
            result = run_audit(directory, table, recorded, tolerance, per_metric)

    checks = Table(title=f"Audit of {name} version {version.version} on {data} ({result.rows} rows) against its recorded test metrics")
    for column in ("metric", "recorded", "now", "now, 95% interval", "worse by", "tolerance", "verdict"):
        checks.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for c in result.checks:
        verdict = ("[red]BREACH[/]" + (" (within sampling noise)" if c.within_noise else "")) if c.breach else "ok"
        interval = f"[{_number(c.low)}, {_number(c.high)}]"
        checks.add_row(c.metric, _number(c.recorded), _number(c.observed), interval, _number(c.worse_by, signed=True), f"{c.tolerance:g}", verdict)
    console.print(checks)
    groups = result.report.rates.table()
    by_group = Table(title="Per group (now)")
    for column in groups.columns:
        by_group.add_column(str(column), justify="left" if column == "group" else "right")
    for row in groups.itertuples(index=False):
        by_group.add_row(*(_number(v) for v in row))
    console.print(by_group)
    for note in result.report.notes:
        console.print(f"note: {escape(note)}")
    if json_out is not None:
        document = {
            "model": f"{name}/{version.version}", "data": str(data), "rows": result.rows,
            "checks": [{**c.__dict__, "breach": c.breach, "within_noise": c.within_noise} for c in result.checks],
            "groups": json.loads(groups.to_json(orient="records")),
        }  # fmt: skip
        json_out.write_text(json.dumps(document, indent=2))
    if result.breaches:
        listed = ", ".join(f"{c.metric} ({c.recorded:.4f} -> {c.observed:.4f})" for c in result.breaches)
        noise = sum(c.within_noise for c in result.breaches)
        hint = f"; {noise} of them within this sample's 95% interval (sampling noise? audit more rows or raise --tolerance-for)" if noise else ""
        errors.print(f"[red]breach:[/] {len(result.breaches)} metric(s) worse than recorded beyond tolerance: {escape(listed)}{hint}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"pass: every metric within tolerance of the recorded test metrics ({len(result.checks)} checked).")


@app.command()
def ablate(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A registered version: `NAME@ALIAS` or `NAME/VERSION` (a `models:/` prefix is allowed), e.g. `adult-demo@champion`.")],
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", metavar="URI", help="The MLflow store that holds the model, e.g. `sqlite:///ethicsweep-runs/adult-demo/mlflow.db`. Default: $MLFLOW_TRACKING_URI.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", metavar="FILE", help="Also write the table to this CSV file.")] = None,
) -> None:
    """Retrain a registered model once per loss term with that term removed (and once
    without DP-SGD when it used it), with the same seed, data and splits, and show how
    every test metric moves.

    The full model is retrained too, so each column differs from it by one term. The table
    is logged to the version's MLflow run (`ablation/ablation.csv`), tagged on the version,
    and added to the sweep's report.

    Example: `ethicsweep ablate adult-demo@champion --tracking-uri sqlite:///ethicsweep-runs/adult-demo/mlflow.db`
    """
    import tempfile

    from ethicsweep.analysis.ablation import ablate as run_ablation
    from ethicsweep.analysis.ablation import ablations
    from ethicsweep.analysis.audit import model_files
    from ethicsweep.analysis.registry import download_model_files, resolve_version
    from ethicsweep.analysis.report import add_ablation
    from ethicsweep.data import prepare
    from ethicsweep.search.tracking import existing_store

    _quiet_libraries()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise EthicsweepError("--tracking-uri: give the MLflow store that holds the model (or set MLFLOW_TRACKING_URI)")
    client = existing_store(uri)
    version = resolve_version(client, model)
    with tempfile.TemporaryDirectory() as tmp:
        spec, config, described = model_files(download_model_files(client, version, tmp))
    parts = list(ablations(config))
    if len(parts) == 1:
        raise EthicsweepError(f"MODEL {model!r}: it was trained with no loss term beyond cross-entropy and without DP-SGD: nothing to ablate")
    with console.status(f"Loading and preparing {spec.data.dataset}..."):
        data = prepare(spec.data, spec.seed)
    if data.sha256 != described.get("data_sha256"):
        raise EthicsweepError(f"data: {spec.data.dataset!r} is not the data version {version.version} was trained on (its SHA-256 differs)")
    with console.status("") as status:
        done: list[str] = []

        def on_done(label: str) -> None:
            done.append(label)
            if len(done) < len(parts):
                status.update(f"Retrained {len(done)} of {len(parts)}; training {parts[len(done)]}...")

        status.update(f"Training 1 of {len(parts)}: {parts[0]}...")
        result = run_ablation(config, data, on_done)
    table = result.table()
    shown = Table(title=f"Ablation of {version.name} version {version.version}: test metrics, retrained with seed {config.seed}")
    for column in table.columns:
        shown.add_column(str(column), justify="left" if column in ("metric", "better") else "right")
    for row in table.itertuples(index=False):
        shown.add_row(*(_number(v, signed=str(c).startswith("change")) for c, v in zip(table.columns, row)))
    console.print(shown)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ablation.csv"
        table.to_csv(path, index=False)
        client.log_artifact(version.run_id, str(path), "ablation")
        if csv_out is not None:
            csv_out.write_bytes(path.read_bytes())
    client.set_model_version_tag(version.name, version.version, "ablation", ", ".join(parts[1:]))
    parent = client.get_run(version.run_id).data.tags.get("mlflow.parentRunId")
    run_dir = client.get_run(parent).data.tags.get("ethicsweep.run_dir") if parent else None
    report = Path(run_dir) / "report.html" if run_dir else None
    if report is not None and report.is_file():
        aliases = sorted(a for a, v in client.get_registered_model(version.name).aliases.items() if v == version.version)
        try:
            add_ablation(report, str(version.version), f"version {version.version} ({', '.join(aliases) or 'no alias'})", table)
        except ValueError as exc:
            console.print(f"report:     not updated: {escape(str(exc))}", soft_wrap=True)
        else:
            client.log_artifact(parent, str(report))
            console.print(f"report:     {report} (ablation added)", soft_wrap=True)
    console.print(f"logged:     ablation/ablation.csv on run {version.run_id}; version tag 'ablation' set", soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Ethical constraints as loss terms, and a search over their trade-offs."""


@app.command()
def version() -> None:
    """Print the ethicsweep version."""
    console.print(__version__)


def main() -> None:
    """Console entry point. Usage mistakes are reported by the command-line parser (exit 2);
    a mistake in a spec, a data file or a setting becomes one line on stderr (exit 2)."""
    try:
        app()
    except EthicsweepError as exc:
        errors.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
