"""Records of a KPI's story: its series and official number, period comparisons, backfill,
unusual values and "What changed?" (series.py, store_series.py, unusual.py, contributions.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .models import BatchError, Execution
from .vocabulary import RAG, Aggregation

# -- the official number and its series (series.py, store_series.py) -------------------------


class SeriesPoint(BaseModel):
    """One successful run in a series: its value and status against the target of its
    own parameters; for a period KPI, the period it covers (the chart's x axis)."""

    model_config = ConfigDict(frozen=True)

    run_id: int
    kpi_version: int
    finished_at: dt.datetime | None
    params: dict[str, Any]
    value: float | None
    target: float | None
    rag: RAG | None
    period_start: dt.date | None = None
    period_end: dt.date | None = None
    period_label: str | None = None


class Series(BaseModel):
    """A KPI's successful runs for one parameter set, oldest first. The official series
    is the KPI's number; the others are explorations, never mixed into it."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    key: str
    params: dict[str, Any]  # the parameter set, without a period KPI's dates
    official: bool
    label: str
    points: list[SeriesPoint]
    runs: int  # successful runs in the series (``points`` may hold fewer)

    @property
    def latest(self) -> SeriesPoint | None:
        return self.points[-1] if self.points else None

    @property
    def previous(self) -> SeriesPoint | None:
        return self.points[-2] if len(self.points) > 1 else None


class Comparison(BaseModel):
    """A run's value against a base: the previous period, the same period last year, the
    previous run of its series, or the target. ``change_pct`` is None (no data) when the
    base is zero or missing, never infinity; ``base_params`` run the missing base."""

    model_config = ConfigDict(frozen=True)

    run_id: int
    compare_to: str
    to_date: bool
    value: float | None
    base_value: float | None
    base_run_id: int | None
    base_label: str
    base_params: dict[str, Any] | None
    change: float | None
    change_pct: float | None

    @property
    def missing(self) -> bool:
        """The base is a run that has not been run yet (``base_params`` says which)."""
        return self.base_run_id is None and self.base_params is not None


class Headline(BaseModel):
    """What a KPI's card shows: the official number, its status and change, the official
    sparkline, and the newest run of any kind."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    official_params: dict[str, Any] | None
    latest: SeriesPoint | None  # the newest official point
    rag: RAG | None
    change: float | None
    change_pct: float | None  # None when the base is 0 (no data, never infinity)
    change_label: str  # "vs previous run", "vs 2025-02", …
    trend: list[float]  # official values, oldest first
    last_run: Execution | None  # the newest run of any parameter set and status
    exploration_runs: int  # successful runs outside the official series


class BackfillResult(BaseModel):
    """What a backfill queued: one run per period, as one batch, and what it skipped."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    batch_id: str
    periods: int
    queued: list[Execution]
    skipped: list[str]  # labels of periods already run for this version and parameter set
    errors: list[BatchError]


# -- unusual values and contributions (unusual.py, contributions.py) -----------------------


class Band(BaseModel):
    """The usual range of a set of values: median ± 3 × 1.4826 × MAD."""

    model_config = ConfigDict(frozen=True)

    median: float
    mad: float
    low: float
    high: float
    count: int  # how many values it was computed from


class UnusualCheck(BaseModel):
    """Whether one run's value is unusual, with the band and the runs it was judged
    against. ``unusual`` is None when the run was not judged (``reason`` says why: not
    successful, no value, or fewer than 8 comparable runs before it)."""

    model_config = ConfigDict(frozen=True)

    run_id: int
    kpi_id: int
    value: float | None
    unusual: bool | None
    median: float | None = None
    mad: float | None = None
    low: float | None = None
    high: float | None = None
    comparable_run_ids: list[int] = []  # oldest first
    reason: str

    @property
    def judged(self) -> bool:
        return self.unusual is not None

    @property
    def side(self) -> Literal["above", "below"] | None:
        """Which side of the band an unusual value lies on."""
        if not self.unusual or self.value is None or self.high is None:
            return None
        return "above" if self.value > self.high else "below"


class Contribution(BaseModel):
    """One breakdown value's part of the change: its sum (or count) in each run, the
    change B − A, and its share of the total change (None when that is 0)."""

    model_config = ConfigDict(frozen=True)

    value: str | None  # None: the empty group (NULL or "")
    a: float
    b: float
    change: float
    share: float | None
    rows_a: int
    rows_b: int

    @property
    def label(self) -> str:
        return "(empty)" if self.value is None else self.value


class Contributions(BaseModel):
    """The change between two runs of one additive KPI, split by ``column``: the top
    contributors up (largest rise first) and down (largest fall first)."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    run_a: int
    run_b: int
    column: str
    aggregation: Aggregation
    value_column: str | None  # None for a count
    value_a: float  # the sum (or count) over run A's stored rows
    value_b: float
    total_change: float  # value_b − value_a, recomputed from the rows
    explained: float  # the sum of every breakdown value's change
    exact: bool  # sums in decimal arithmetic: explained equals total_change exactly
    balanced: bool  # explained equals total_change (within rounding when not exact)
    run_value_a: float | None  # the runs' own values, as the KPI's SQL gave them
    run_value_b: float | None
    up: list[Contribution]
    down: list[Contribution]
    all_count: int  # breakdown values in either run
    up_count: int
    down_count: int
    unchanged_count: int
    rest_change: float  # the change of the values not listed in up or down
    note: str
