"""Views for pages: the rules pages used to compute from records themselves.

Pure functions over records (no database, no streamlit); ``KPIStore`` exposes each as a
method so the dashboard and the CLI ask the store, and the rule lives in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .models import KPI, DataSource, Execution
from .story_records import Headline
from .vocabulary import RAG, RunStatus


@dataclass(frozen=True)
class RagCounts:
    """How many KPIs' official numbers are on, near or off target, have no data (no rows
    or a NULL value), have no target, or were never run successfully; each KPI counts once."""

    green: int = 0
    amber: int = 0
    red: int = 0
    no_data: int = 0
    no_status: int = 0  # a value but no target
    never_run: int = 0

    def __getitem__(self, rag: RAG) -> int:
        return int(getattr(self, str(rag)))


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands: its runs (by id), how many finished, succeeded, failed."""

    batch_id: str
    runs: tuple[Execution, ...]

    @property
    def total(self) -> int:
        return len(self.runs)

    @property
    def finished(self) -> tuple[Execution, ...]:
        return tuple(r for r in self.runs if r.finished)

    @property
    def succeeded(self) -> int:
        return sum(r.status == RunStatus.SUCCESS for r in self.runs)

    @property
    def failed(self) -> tuple[Execution, ...]:
        """Finished runs that did not succeed (failed, timed out or cancelled)."""
        return tuple(r for r in self.finished if r.status != RunStatus.SUCCESS)

    @property
    def done(self) -> bool:
        return len(self.finished) == self.total

    @property
    def share_done(self) -> float:
        return len(self.finished) / max(1, self.total)


@dataclass(frozen=True)
class Rerun:
    """KPIs to run again and the parameters to run them with."""

    kpi_ids: tuple[int, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobBoard:
    """What a live job monitor shows: active runs (running first), their expected row
    counts (from each KPI's last successful run), and recently finished runs."""

    active: tuple[Execution, ...]
    expected_rows: Mapping[int, int]  # kpi_id -> rows of its last successful run
    recent: tuple[Execution, ...]

    def expected(self, run: Execution) -> int | None:
        return self.expected_rows.get(run.kpi_id)


def latest_success(runs: Iterable[Execution]) -> Execution | None:
    """The first successful run of ``runs`` (newest first) that has a value."""
    return next((r for r in runs if r.status == RunStatus.SUCCESS and r.value is not None), None)


def rag_counts(kpis: Iterable[KPI], headlines: Mapping[int, Headline]) -> RagCounts:
    """The status of each KPI's official number, from ``KPIStore.headlines``."""
    counts = {"green": 0, "amber": 0, "red": 0, "no_data": 0, "no_status": 0, "never_run": 0}
    for kpi in kpis:
        headline = headlines.get(kpi.id)
        if headline is None or headline.latest is None:
            counts["never_run"] += 1
        else:
            counts[str(headline.rag) if headline.rag else "no_status"] += 1
    return RagCounts(**counts)


def total_pages(row_count: int | None, page_size: int) -> int:
    """Pages of ``page_size`` rows needed for ``row_count`` rows (at least one)."""
    return max(1, -(-(row_count or 0) // max(1, page_size)))


def page_span(page: int, page_size: int, shown: int) -> tuple[int, int]:
    """The numbers of the first and last row on ``page`` when it shows ``shown`` rows."""
    first = (page - 1) * page_size + 1
    return first, first + shown - 1


def accepts_uploads(source: DataSource) -> bool:
    """CSV files can be uploaded only into local SQLite data sources."""
    try:
        return sa.engine.make_url(source.url).get_backend_name() == "sqlite"
    except (sa.exc.ArgumentError, ValueError):
        return False


def failed_rerun(runs: Iterable[Execution]) -> Rerun:
    """The KPIs whose run finished without success, with their parameters merged
    (a later run's value wins, in run order)."""
    failed = sorted(
        (r for r in runs if r.finished and r.status != RunStatus.SUCCESS), key=lambda r: r.id
    )
    merged: dict[str, Any] = {}
    for run in failed:
        merged.update(run.params)
    return Rerun(kpi_ids=tuple(r.kpi_id for r in failed), params=merged)


def expected_rows(latest: Mapping[int, Sequence[Execution]]) -> dict[int, int]:
    """Row count of each KPI's newest successful run that stored rows."""
    found: dict[int, int] = {}
    for kpi_id, runs in latest.items():
        success = next((r for r in runs if r.status == RunStatus.SUCCESS and r.row_count), None)
        if success is not None and success.row_count:
            found[kpi_id] = success.row_count
    return found


def job_board(
    active: Iterable[Execution],
    latest: Mapping[int, Sequence[Execution]],
    recent: Iterable[Execution],
    recent_limit: int = 10,
) -> JobBoard:
    """Running runs first, then queued ones, newest first within each."""
    order = {RunStatus.RUNNING: 0, RunStatus.PENDING: 1}
    shown = sorted(active, key=lambda r: (order.get(r.status, 2), -r.id))
    return JobBoard(
        active=tuple(shown),
        expected_rows=expected_rows(latest),
        recent=tuple([r for r in recent if r.finished][:recent_limit]),
    )
