"""The sweep spec: one YAML document that says which data, which model, which loss terms,
what to search and where to record it. Validated with pydantic before any worker starts.

A searchable parameter is named by its dotted path in the training config:
``training.lr``, ``model.hidden``, ``terms.<term name>.weight``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ethicsweep.errors import SpecError
from ethicsweep.objectives.costs import CostModel
from ethicsweep.objectives.metrics import METRIC_DIRECTIONS
from ethicsweep.objectives.privacy import PrivacySpec, dp_sgd_refusal
from ethicsweep.objectives.registry import TERM_KINDS, TermSpec
from ethicsweep.rules import Rule, RuleError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class DataSpec(_Strict):
    """Which table, which columns play which role, and how it is split."""

    dataset: str = Field("adult", description="bundled name (adult, compas, german) or a path to a .csv/.parquet file")
    label: str | None = Field(None, description="label column (required for a file; bundled sets define their own)")
    positive_label: str | int | float | bool | None = Field(None, description="the label value that counts as y = 1")
    sensitive: list[str] | None = Field(None, min_length=1, description="sensitive columns; groups are their value combinations")
    bins: dict[str, list[float]] = Field(default_factory=dict, description="bin edges for a continuous sensitive column")
    missing: Literal["error", "own_group"] = "error"
    context: str | None = Field(None, description="context column (kept as a feature)")
    drop: list[str] = Field(default_factory=list, description="columns not used as features")
    sensitive_as_feature: bool = Field(False, description="let the model read the sensitive columns")
    min_group_size: int = Field(30, ge=1, description="groups smaller than this in a split are left out of its gaps")
    validation_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="ignored when the data set has an official test split")

    @field_validator("bins")
    @classmethod
    def _bins_increasing(cls, bins: dict[str, list[float]]) -> dict[str, list[float]]:
        for column, edges in bins.items():
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ValueError(f"bins for {column!r} must be at least two strictly increasing edges, got {edges}")
        return bins


class ModelSpec(_Strict):
    kind: Literal["logistic", "mlp"] = "mlp"
    hidden: int = Field(64, ge=1, le=4096, description="units per hidden layer (mlp)")
    layers: int = Field(1, ge=1, le=8, description="hidden layers (mlp)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="decision threshold t: y_hat = 1[p >= t]")
    abstain: Literal["none", "rule", "trained"] = Field(
        "none", description="route rows to a person: never, by a rule on uncertainty, or by a trained abstain output"
    )
    abstain_confidence: float = Field(0.6, gt=0.5, le=1.0, description="rule: abstain when max(p, 1 - p) is below this")


class TrainingSpec(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)


class TrainConfig(_Strict):
    """Everything one trial needs to train one model. A trial's searched values override it."""

    model: ModelSpec = ModelSpec()
    training: TrainingSpec = TrainingSpec()
    terms: list[TermSpec] = Field(default_factory=list)
    harm: CostModel = CostModel()
    privacy: PrivacySpec = PrivacySpec()
    seed: int = 0

    @field_validator("terms")
    @classmethod
    def _unique_term_names(cls, terms: list[TermSpec]) -> list[TermSpec]:
        keys = [t.key for t in terms]
        for key in keys:
            if keys.count(key) > 1:
                raise ValueError(f"term name {key!r} is used twice; give each term a distinct name")
        return terms

    @field_validator("privacy")
    @classmethod
    def _terms_allow_dp_sgd(cls, privacy: PrivacySpec, info: ValidationInfo) -> PrivacySpec:
        if privacy.dp_sgd:
            for term in info.data.get("terms", []):
                refusal = dp_sgd_refusal(term)
                if refusal:
                    raise ValueError(f"{refusal}; remove the term or turn dp_sgd off")
        return privacy

    def with_params(self, params: dict[str, Any]) -> TrainConfig:
        """A copy with dotted-path parameters set, e.g. ``{"terms.dp.weight": 2.0}``."""
        tree = self.model_dump()
        for path, value in params.items():
            _set_path(tree, path, value)
        return TrainConfig.model_validate(tree)


def _set_path(tree: dict, path: str, value: Any) -> None:
    head, *rest = path.split(".")
    if head == "terms" and rest:
        matches = [t for t in tree["terms"] if (t.get("name") or t["kind"]) == rest[0]]
        if not matches:
            names = [t.get("name") or t["kind"] for t in tree["terms"]]
            raise KeyError(f"no term named {rest[0]!r}; terms: {', '.join(names) or '(none)'}")
        node, keys = matches[0], rest[1:]
    else:
        node, keys = tree, [head, *rest]
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise KeyError(f"{key!r} is not a section")
        node = node[key]
    if not keys or keys[-1] not in node:
        raise KeyError(f"{keys[-1] if keys else path!r} is not a field")
    node[keys[-1]] = value


class Parameter(_Strict):
    """A searched parameter: a float or int range (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[str | int | float | bool] | None = None

    def extremes(self) -> list[Any]:
        """The values that bound this parameter: its range's ends, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def admits(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's range or choices."""
        if self.type == "categorical":
            return any(value == choice and type(value) is type(choice) for choice in self.choices or [])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.type == "int" and value != int(value)):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.type == "categorical":
            return f"choices {self.choices}"
        return f"{self.type} range [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"

    @model_validator(mode="after")
    def _check(self) -> Parameter:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range needs low > 0, got {self.low}")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs whole-number 'low' and 'high'")
        return self


class ObjectiveSpec(_Strict):
    metric: str
    direction: Literal["max", "min"] | None = Field(None, description="defaults to the metric's natural direction")
    reference: float | None = Field(None, description="the hypervolume's reference value (the worst value that counts); default per metric")

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in METRIC_DIRECTIONS:
            raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_DIRECTIONS)}")
        return metric

    @model_validator(mode="after")
    def _natural_direction(self) -> ObjectiveSpec:
        natural = METRIC_DIRECTIONS[self.metric]
        if self.direction is not None and self.direction != natural:
            raise ValueError(
                f"objective {self.metric} is better when {'lower' if natural == 'min' else 'higher'}; "
                f"direction {self.direction!r} would search for the worst models: use {natural!r} or leave direction out"
            )
        return self

    @property
    def mode(self) -> Literal["max", "min"]:
        return self.direction or METRIC_DIRECTIONS[self.metric]


OPTUNA_SEARCHERS = ("nsga2", "nsga3", "tpe", "gp", "random")
PYMOO_SEARCHERS = ("pymoo-nsga2", "pymoo-nsga3", "pymoo-smsemoa", "pymoo-agemoea")
Searcher = Literal["nsga2", "nsga3", "tpe", "gp", "random", "pymoo-nsga2", "pymoo-nsga3", "pymoo-smsemoa", "pymoo-agemoea"]


class SchedulerSpec(_Strict):
    """Early stopping across trials: ``none`` (every trial trains all its epochs) or
    ``mo_asha`` (multi-objective asynchronous successive halving over the objectives)."""

    kind: Literal["none", "mo_asha"] = "none"
    grace_period: int = Field(1, ge=1, description="epochs every trial trains before the first rung")
    reduction_factor: float = Field(3.0, gt=1, description="about 1/reduction_factor of the trials at a rung go on")


class SearchSpec(_Strict):
    searcher: Searcher = "nsga2"
    num_trials: int = Field(24, ge=1, le=100_000)
    population_size: int = Field(8, ge=2, description="generation size of the evolutionary searchers")
    constraints: list[str] = Field(default_factory=list, description="rules on validation metrics, e.g. 'epsilon <= 3'")
    initial: list[dict[str, Any]] = Field(default_factory=list, description="configurations tried first (warm start)")
    scheduler: SchedulerSpec = SchedulerSpec()
    max_failures: int = Field(1, ge=0, le=100, description="retries of a trial whose worker crashed")
    time_limit_s: float | None = Field(None, gt=0, description="a trial stops after the epoch that passes this many seconds")
    max_concurrent: int | None = Field(None, ge=1, description="default: as many as the cluster's CPUs allow")
    reuse_actors: bool = Field(
        True, description="run the next trial in an idle trial worker (fast); false: a fresh worker per trial, placed anew"
    )
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    objectives: list[ObjectiveSpec] = Field(
        default_factory=lambda: [ObjectiveSpec(metric="accuracy"), ObjectiveSpec(metric="dp_gap")],
        min_length=1,
    )
    space: dict[str, Parameter] = Field(default_factory=dict)

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, objectives: list[ObjectiveSpec]) -> list[ObjectiveSpec]:
        metrics = [o.metric for o in objectives]
        for metric in metrics:
            if metrics.count(metric) > 1:
                raise ValueError(f"objective {metric!r} is listed twice; list each metric once")
        return objectives

    @field_validator("constraints")
    @classmethod
    def _rules(cls, constraints: list[str]) -> list[str]:
        for text in constraints:
            try:
                rule = Rule.parse(text, split="val", where="constraint")
            except RuleError as exc:
                raise ValueError(str(exc)) from None
            if not rule.key.startswith("val/"):
                raise ValueError(f"constraint {text!r}: constraints read validation metrics (the test split is held out); write it without 'test/'")
        return constraints

    @property
    def rules(self) -> list[Rule]:
        """The constraints, parsed (keys like ``val/epsilon``)."""
        return [Rule.parse(text, split="val") for text in self.constraints]

    @field_validator("space")
    @classmethod
    def _not_empty(cls, space: dict[str, Parameter]) -> dict[str, Parameter]:
        if not space:
            raise ValueError("search.space is empty: every trial would train the same model; add at least one parameter")
        for path in space:
            if path.split(".")[-1] in ("kind", "name") and path.startswith("terms."):
                raise ValueError(f"search.space.{path}: a term's kind and name cannot be searched; search its numeric fields")
        return space


class GovernanceSpec(_Strict):
    """Why the sweep is set up as it is, and what risk is acceptable: for reviewers.

    It changes no training. It travels into MLflow tags (parent run and every registered
    version) and the report, which checks each candidate against ``acceptable_risk``.
    """

    rationale: str = Field("", max_length=5000, description="why these terms, weights and bounds")
    owner: str = Field("", max_length=200, description="who answers for the choices")
    intended_use: str = Field("", max_length=5000, description="what the models are for, and for whom (model cards)")
    limitations: str = Field("", max_length=5000, description="known limits beyond those ethicsweep finds itself (model cards)")
    acceptable_risk: dict[str, float] = Field(
        default_factory=dict, description="metric -> bound: at most this for a lower-is-better metric, at least for a higher-is-better one"
    )

    @field_validator("acceptable_risk")
    @classmethod
    def _known_metrics(cls, bounds: dict[str, float]) -> dict[str, float]:
        for metric in bounds:
            if metric not in METRIC_DIRECTIONS:
                raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_DIRECTIONS)}")
        return bounds

    def risk_met(self, metric: str, value: float) -> bool:
        """Whether ``value`` of ``metric`` is within its acceptable bound (NaN never is)."""
        bound = self.acceptable_risk[metric]
        if value != value:  # NaN
            return False
        return value <= bound if METRIC_DIRECTIONS[metric] == "min" else value >= bound


class SweepSpec(_Strict):
    """A whole sweep. ``name`` names the MLflow experiment and the registered model."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
            raise ValueError(
                f"name {name!r} is not allowed: use 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return name
    seed: int = Field(0, ge=0)
    data: DataSpec = DataSpec()
    train: TrainConfig = TrainConfig()
    search: SearchSpec = SearchSpec()
    output_dir: str = Field("ethicsweep-runs", description="sweeps are written to <output_dir>/<name>")
    tracking_uri: str | None = Field(None, description="default: sqlite:///<sweep dir>/mlflow.db")
    storage_path: str | None = Field(None, description="Ray Tune's trial storage (s3://, gs:// or a shared path); default: the sweep dir")
    tracking_wait_s: float = Field(
        300.0, ge=0, le=86_400, description="at the end of a sweep, how long to retry an MLflow server that stopped answering"
    )
    governance: GovernanceSpec = GovernanceSpec()

    @model_validator(mode="before")
    @classmethod
    def _train_seed_is_the_sweep_seed(cls, data: Any) -> Any:
        """One seed for the whole sweep: it is copied into ``train.seed``."""
        if isinstance(data, dict) and isinstance(data.get("train", {}), dict):
            train = data.get("train", {})
            if "seed" in train and train["seed"] != data.get("seed", 0):
                raise ValueError(f"train.seed ({train['seed']!r}) differs from the top-level seed; set only the top-level seed")
            data = {**data, "train": {**train, "seed": data.get("seed", 0)}}
        return data

    @model_validator(mode="after")
    def _space_paths_exist(self) -> SweepSpec:
        for path, parameter in self.search.space.items():
            for probe in parameter.extremes():
                try:
                    self.train.with_params({path: probe})
                except KeyError as exc:
                    raise ValueError(f"search.space.{path}: names no training parameter ({exc.args[0]})") from None
                except ValidationError as exc:
                    detail = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f"search.space.{path}: the value {probe!r} is not allowed: {detail}") from None
        return self

    @model_validator(mode="after")
    def _grace_period_within_epochs(self) -> SweepSpec:
        scheduler = self.search.scheduler
        if scheduler.kind != "none" and scheduler.grace_period > self.max_epochs:
            where = "the top of search.space.training.epochs" if "training.epochs" in self.search.space else "train.training.epochs"
            raise ValueError(
                f"search.scheduler.grace_period: {scheduler.grace_period} is more than the most epochs a trial trains "
                f"({self.max_epochs}, {where}); allowed: 1 to {self.max_epochs}"
            )
        return self

    @model_validator(mode="after")
    def _initial_in_space(self) -> SweepSpec:
        space = self.search.space
        if self.search.initial and self.search.searcher in PYMOO_SEARCHERS:
            raise ValueError(f"search.initial: a warm start needs an Optuna searcher ({', '.join(OPTUNA_SEARCHERS)}), not {self.search.searcher!r}")
        for i, config in enumerate(self.search.initial):
            where = f"search.initial.{i}"
            unknown = [path for path in config if path not in space]
            if unknown:
                raise ValueError(f"{where}: {unknown[0]!r} is not in search.space; allowed: {', '.join(space)}")
            missing = [path for path in space if path not in config]
            if missing:
                raise ValueError(f"{where}: gives no value for {missing[0]!r}; a starting configuration sets every searched parameter")
            for path, value in config.items():
                if not space[path].admits(value):
                    raise ValueError(f"{where}.{path}: {value!r} is outside the searched {space[path].describe()}")
        return self

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial can train: the searched range's top, else the base config's."""
        searched = self.search.space.get("training.epochs")
        return int(searched.high) if searched is not None and searched.type == "int" else self.train.training.epochs

    @property
    def sweep_dir(self) -> Path:
        return Path(self.output_dir).resolve() / self.name

    @property
    def spec_hash(self) -> str:
        """SHA-256 of the spec's canonical JSON (key order and formatting do not matter; where
        results are written — output_dir, tracking_uri, storage_path — and tracking_wait_s are left out)."""
        document = self.model_dump(mode="json", exclude={"output_dir", "tracking_uri", "storage_path", "tracking_wait_s"})
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _format_error(exc: ValidationError, source: str) -> str:
    """One line from pydantic's first error: where, what was given, what is allowed."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    # a discriminated union puts the term kind into the location: terms.0.<kind>.weight
    loc = [part for i, part in enumerate(loc) if not (i and isinstance(loc[i - 1], int) and part in TERM_KINDS)]
    where = ".".join(str(part) for part in loc)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "union_tag_not_found":
        return f"{source}: field '{where}.kind' is required; allowed: {', '.join(TERM_KINDS)}"
    if error["type"] == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return f"{source}: field '{where}.kind': unknown term kind {tag!r}; allowed: {', '.join(TERM_KINDS)}"
    if not where:  # a check across fields: its message names the field and the value
        return f"{source}: {message}"
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown field {where!r}; remove it or check its spelling"
    given = error.get("input")
    if error["type"] == "missing":
        return f"{source}: field {where!r} is required"
    if error["type"] in ("bool_parsing", "bool_type"):
        return f"{source}: field {where!r}: {message} (got {given!r}); allowed: true or false"
    if isinstance(given, (dict, list)) or error["type"].startswith(("value_error", "assertion")):
        return f"{source}: field {where!r}: {message}"  # the message names the value
    return f"{source}: field {where!r}: {message} (got {given!r})"


def parse_spec(document: Any, source: str = "spec") -> SweepSpec:
    """Validate a spec given as a mapping; raise :class:`SpecError` with one line on failure."""
    if not isinstance(document, dict):
        raise SpecError(f"{source}: a spec must be a YAML mapping of fields (name, data, train, search...), got {type(document).__name__}")
    try:
        return SweepSpec.model_validate(document)
    except ValidationError as exc:
        raise SpecError(_format_error(exc, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last),
    and reading ``1e-3`` and ``1e12`` as numbers, as YAML 1.2 does (PyYAML follows YAML 1.1,
    whose floats need a dot: ``1.0e-3``, and would pass the text on as a string)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"spec file {str(path)!r} is a directory; give a .yaml file")
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    try:
        document = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path.name}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path.name}: not UTF-8 text") from None
    if document is None:
        raise SpecError(f"{path.name}: the file is empty; a spec is a YAML mapping of fields (name, data, train, search...), see configs/")
    return parse_spec(document, source=path.name)

