"""Typed records that cross the KPIStore boundary.

Inputs (``KPISpec``, ``ParameterSpec``) validate themselves with pydantic; outputs are
frozen models so a page can never mutate what it was given.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .values import coerce_value, shown, text_problem
from .vocabulary import (
    FINISHED_STATUSES,
    RAG,
    Aggregation,
    Direction,
    Grain,
    KPIStatus,
    ParamType,
    Role,
    RunMode,
    RunStatus,
)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Stored as plain text (the rest of a definition is JSON, where U+0000 is escaped).
TEXT_COLUMNS: tuple[str, ...] = ("name", "description", "nl_definition", "data_source", "sql")
TEXT_COLUMNS += ("value_column", "unit", "owner", "breakdown_column")
NUL = "\x00"
NUL_MESSAGE = "cannot contain the NUL character (U+0000)"
MAX_TEXT_CHARS = 10_000  # description, plain-language definition
MAX_SQL_CHARS = 100_000
MAX_TAGS, MAX_TAG_CHARS = 30, 50
MAX_PARAMETERS, MAX_CHOICES, MAX_LABEL_CHARS = 100, 1_000, 200


def _valid_text(value: str | None) -> str | None:
    """Text every database stores as is: no NUL (PostgreSQL text cannot hold it) and valid
    Unicode (a lone surrogate, e.g. from bytes that were not UTF-8, cannot be encoded)."""
    if value is not None:
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
    return value


class ParameterSpec(BaseModel):
    """One typed ``:name`` parameter of a KPI query."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: ParamType = ParamType.STR
    default: Any = None
    choices: list[Any] | None = Field(default=None, max_length=MAX_CHOICES)
    label: str | None = Field(default=None, max_length=MAX_LABEL_CHARS)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value or ""):
            raise ValueError(
                "a parameter name must start with a letter or _ and hold only letters, digits and _"
            )
        return value

    @field_validator("label")
    @classmethod
    def _label_text(cls, value: str | None) -> str | None:
        return _valid_text(value)

    @model_validator(mode="after")
    def _typed_default_and_choices(self) -> ParameterSpec:
        if self.choices is not None:
            if not self.choices:
                raise ValueError(f"parameter '{self.name}': choices, when given, cannot be empty")
            typed = [
                coerce_value(self.type, c, f"parameter '{self.name}' choice") for c in self.choices
            ]
            object.__setattr__(self, "choices", typed)
        if self.default is not None:
            default = coerce_value(self.type, self.default, f"parameter '{self.name}' default")
            if self.choices is not None and default not in self.choices:
                raise ValueError(
                    f"parameter '{self.name}': default {default!r} is not one of its choices"
                )
            object.__setattr__(self, "default", default)
        return self


class ParameterTarget(BaseModel):
    """A target that applies when a run's ``parameter`` has ``value`` (e.g. per region)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parameter: str
    value: Any
    target: float = Field(allow_inf_nan=False)


class PeriodSpec(BaseModel):
    """A period KPI: two date parameters, ``start`` and ``end`` (both inclusive), and how
    long one period is. Its series runs one point per period."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: str
    end: str
    grain: Grain = Grain.MONTH


class KPISpec(BaseModel):
    """Everything a user defines about a KPI. Only name, data_source and sql are required.

    ``official_params`` pins the parameter set of the official number (None: the defaults);
    ``targets`` overrides ``target`` for runs with one parameter value; ``period`` makes it
    a period KPI; ``breakdown_column`` is what "What changed?" splits an additive KPI by.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=MAX_TEXT_CHARS)
    nl_definition: str = Field(default="", max_length=MAX_TEXT_CHARS)
    data_source: str = Field(min_length=1, max_length=100)
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS)
    parameters: list[ParameterSpec] = Field(default_factory=list, max_length=MAX_PARAMETERS)
    value_column: str | None = Field(default=None, max_length=200)
    aggregation: Aggregation = Aggregation.SUM
    unit: str = Field(default="", max_length=50)
    target: float | None = Field(default=None, allow_inf_nan=False)
    direction: Direction = Direction.HIGHER_IS_BETTER
    tolerance_pct: float = Field(default=10.0, ge=0, le=1000, allow_inf_nan=False)
    owner: str = Field(default="", max_length=200)
    tags: list[str] = Field(default_factory=list)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    max_retries: int | None = Field(default=None, ge=0, le=10)
    official_params: dict[str, Any] | None = None
    targets: list[ParameterTarget] = Field(default_factory=list, max_length=MAX_CHOICES)
    period: PeriodSpec | None = None
    breakdown_column: str | None = Field(default=None, max_length=200)

    @field_validator("name", "data_source", "sql")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("cannot be blank")
        return value

    @field_validator("value_column", "breakdown_column")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator(*TEXT_COLUMNS)
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        return _valid_text(value)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str]) -> list[str]:
        seen: list[str] = []
        for tag in value:
            tag = str(tag).strip()
            problem = text_problem(tag, MAX_TAG_CHARS)
            if problem:
                raise ValueError(f"the tag {shown(tag)} {problem}")
            if tag and tag not in seen:
                seen.append(tag)
        if len(seen) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags, not {len(seen)}")
        return seen

    @model_validator(mode="after")
    def _unique_parameter_names(self) -> KPISpec:
        names = [p.name for p in self.parameters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter names must be unique: {', '.join(duplicates)} repeated")
        return self

    @model_validator(mode="after")
    def _story_fields_name_parameters(self) -> KPISpec:
        self._check_period()
        self._check_targets()
        self._check_official_params()
        if self.breakdown_column and self.aggregation not in ADDITIVE:
            raise ValueError(
                "a breakdown column needs an additive aggregation (sum or count), "
                f"not {self.aggregation}"
            )
        return self

    def _check_period(self) -> None:
        if self.period is None:
            return
        for role, name in (("start", self.period.start), ("end", self.period.end)):
            param = self.parameter(name)
            if param is None or param.type != ParamType.DATE:
                raise ValueError(
                    f"the period's {role} must name a date parameter; '{name}' is not one"
                )
        if self.period.start == self.period.end:
            raise ValueError("the period's start and end must be two different parameters")

    def _check_targets(self) -> None:
        typed: list[ParameterTarget] = []
        seen: set[tuple[str, str]] = set()
        for entry in self.targets:
            param = self.parameter(entry.parameter)
            if param is None:
                raise ValueError(f"a target names '{entry.parameter}', which is not a parameter")
            where = f"the target for {entry.parameter}"
            value = coerce_value(param.type, entry.value, where)
            if param.choices is not None and value not in param.choices:
                raise ValueError(f"{where} = {value!r}: {value!r} is not one of its choices")
            if (entry.parameter, repr(value)) in seen:
                raise ValueError(f"two targets for {entry.parameter} = {value!r}")
            seen.add((entry.parameter, repr(value)))
            typed.append(entry.model_copy(update={"value": value}))
        object.__setattr__(self, "targets", typed)

    def _check_official_params(self) -> None:
        if not self.official_params:
            object.__setattr__(self, "official_params", None)
            return
        typed: dict[str, Any] = {}
        for name, raw in self.official_params.items():
            param = self.parameter(name)
            if param is None:
                raise ValueError(f"the official parameter set names '{name}', not a parameter")
            value = coerce_value(param.type, raw, f"the official value of '{name}'")
            if param.choices is not None and value not in param.choices:
                raise ValueError(f"the official value of '{name}' is not one of its choices")
            typed[name] = value
        object.__setattr__(self, "official_params", typed)

    def parameter(self, name: str) -> ParameterSpec | None:
        return next((p for p in self.parameters if p.name == name), None)

    def target_for(self, params: dict[str, Any] | None) -> float | None:
        """The target of a run with ``params``: the first per-value target that matches,
        else the KPI's target."""
        for entry in self.targets:
            if params and entry.parameter in params and _same(params[entry.parameter], entry.value):
                return entry.target
        return self.target


SPEC_FIELDS: tuple[str, ...] = tuple(KPISpec.model_fields)
ADDITIVE = (Aggregation.SUM, Aggregation.COUNT)


def _same(run_value: Any, target_value: Any) -> bool:
    """A run's parameter (typed, or its JSON form) equals a target's typed value."""
    if run_value == target_value:
        return True
    return str(run_value) == str(target_value)


class KPI(KPISpec):
    """A stored KPI definition at one version."""

    id: int
    version: int
    status: KPIStatus
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    updated_by: str

    def spec(self) -> KPISpec:
        return KPISpec(**{f: getattr(self, f) for f in SPEC_FIELDS})

    def rag_status(self, value: float | None, params: dict[str, Any] | None = None) -> RAG | None:
        """Red, amber or green for ``value`` against the target of a run with ``params``.

        Green meets the target; amber misses it by at most ``tolerance_pct`` percent of
        the target; red misses it by more. No value (no rows, or NULL) is ``NO_DATA``,
        target or not; a value without a target has no status (None).
        """
        if value is None:
            return RAG.NO_DATA
        target = self.target_for(params)
        if target is None:
            return None
        margin = abs(target) * self.tolerance_pct / 100
        shortfall = (
            target - value if self.direction == Direction.HIGHER_IS_BETTER else value - target
        )
        if shortfall <= 0:
            return RAG.GREEN
        return RAG.AMBER if shortfall <= margin else RAG.RED


class KPIVersion(BaseModel):
    """One immutable entry of a KPI's version history."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    version: int
    spec: KPISpec
    action: str
    note: str
    changed_by: str
    changed_at: dt.datetime


class FieldDiff(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    before: Any
    after: Any


class VersionDiff(BaseModel):
    """What changed between two versions; ``sql_diff`` is a unified diff of the SQL."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    version_a: int
    version_b: int
    changes: list[FieldDiff]
    sql_diff: str


class DataSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    url: str
    created_at: dt.datetime
    created_by: str

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for showing on screen."""
        return mask_url(self.url)


def mask_url(url: str) -> str:
    """A database URL with its password replaced by ***."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    occurred_at: dt.datetime
    actor: str
    action: str
    kpi_id: int | None
    entity: str | None
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str


class Person(BaseModel):
    """Someone who signs in: identified by their email (case-folded), with one role and
    optionally the data sources they are limited to (empty means all)."""

    model_config = ConfigDict(frozen=True)

    email: str
    display_name: str
    role: Role
    active: bool
    data_sources: tuple[str, ...] = ()
    created_at: dt.datetime
    last_seen_at: dt.datetime | None = None

    @property
    def label(self) -> str:
        """ "Name <email>", or the email alone when the name is the email."""
        if not self.display_name or self.display_name == self.email:
            return self.email
        return f"{self.display_name} <{self.email}>"


class AuditVerification(BaseModel):
    """The outcome of re-computing the audit hash chain."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""
    problems: list[str] = Field(default_factory=list)  # every finding, the reason first
    checkpoint_count: int | None = None  # entries the checkpoint used vouches for


class AuditCheckpoint(BaseModel):
    """How many audit entries there were and the newest one's hash, signed with the key."""

    model_config = ConfigDict(frozen=True)

    count: int
    head_hash: str
    created_at: dt.datetime
    signature: str


class Column(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: str


class Execution(BaseModel):
    """One run of one KPI version: a job in the queue, running, or finished."""

    model_config = ConfigDict(frozen=True)

    id: int
    kpi_id: int
    kpi_version: int
    params: dict[str, Any]
    status: RunStatus
    requested_by: str
    mode: RunMode
    batch_id: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    execution_time_ms: float | None
    attempts: int
    error: str | None
    row_count: int | None
    truncated: bool
    columns: list[Column]
    value: float | None
    first_row_sample: dict[str, Any] | None
    timeout_s: float
    max_retries: int
    worker_id: str | None
    heartbeat_at: dt.datetime | None
    rows_read: int
    cancel_requested: bool
    requeue_count: int
    series_key: str | None = None
    period_start: dt.date | None = None
    period_end: dt.date | None = None
    schedule_id: int | None = None
    rows_pruned_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class ResultPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    execution_id: int
    total: int
    page: int
    page_size: int
    total_pages: int
    columns: list[Column]
    rows: list[list[Any]]


class BatchError(BaseModel):
    model_config = ConfigDict(frozen=True)

    kpi_id: Any
    message: str


class BatchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_id: str
    total: int
    successful: int
    failed: int
    executions: list[Execution]
    errors: list[BatchError]


# -- comparing the rows of two runs (run_diff.py) ---------------------------------------------

DiffCategory = Literal["only_in_a", "only_in_b", "changed"]
DIFF_CATEGORIES: tuple[str, ...] = ("only_in_a", "only_in_b", "changed")


class ColumnMatch(BaseModel):
    """How often one column agrees between the rows the two runs share (matched by key).
    A column only one run has never agrees (``matched`` 0)."""

    model_config = ConfigDict(frozen=True)

    column: str
    in_a: bool
    in_b: bool
    matched: int
    percent: float | None  # None when the runs share no key


class SettingDifference(BaseModel):
    """Something the two runs were run with that differs: ``kpi``, ``kpi_version`` or
    ``parameter`` (with its ``name``)."""

    model_config = ConfigDict(frozen=True)

    what: str
    name: str | None = None
    a: Any = None
    b: Any = None


class RunDiff(BaseModel):
    """Two successful runs compared row by row, rows matched by the ``key`` columns."""

    model_config = ConfigDict(frozen=True)

    run_a: int
    run_b: int
    key: list[str]
    rows_a: int
    rows_b: int
    only_in_a: int
    only_in_b: int
    changed: int
    unchanged: int
    columns: list[ColumnMatch]
    columns_only_in_a: list[str]
    columns_only_in_b: list[str]
    settings: list[SettingDifference]

    @property
    def settings_differ(self) -> bool:
        """Whether the runs used a different KPI, KPI version or parameters."""
        return bool(self.settings)

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.changed)

    def count(self, category: str) -> int:
        return int(getattr(self, category))


class DiffRow(BaseModel):
    """One differing row: its key values, its row numbers in each run, its values by
    column name in each run (None where it is absent), and the columns that differ."""

    model_config = ConfigDict(frozen=True)

    key: list[Any]
    row_a: int | None
    row_b: int | None
    a: dict[str, Any] | None
    b: dict[str, Any] | None
    columns: list[str]


class DiffPage(BaseModel):
    """One page of one category of a run diff, in key order."""

    model_config = ConfigDict(frozen=True)

    run_a: int
    run_b: int
    category: DiffCategory
    page: int
    page_size: int
    rows: list[DiffRow]
    has_more: bool
