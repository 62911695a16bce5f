"""Many KPIs at once: one batch id, one run each, refusals reported, never raised."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .errors import KPIStoreError
from .models import BatchError, BatchResult, Execution
from .runs import RunLedger, new_batch_id
from .vocabulary import RunMode, RunStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedBatch:
    batch_id: str
    total: int
    runs: list[tuple[int, str | None]]  # (execution id, holder when run now)
    errors: list[BatchError]


def record(
    ledger: RunLedger,
    kpi_ids: Iterable[int],
    params: dict[str, Any] | None,
    actor: str,
    mode: RunMode,
    new_holder: Callable[[], str],
) -> RecordedBatch:
    """One run per KPI under a new batch id: held by a new holder when run now, else
    queued. ``params`` apply to each KPI that declares them; refusals become errors."""
    kpi_ids = list(kpi_ids)
    batch_id = new_batch_id()
    runs: list[tuple[int, str | None]] = []
    errors: list[BatchError] = []
    for kpi_id in kpi_ids:
        holder = new_holder() if mode == RunMode.NOW else None
        try:
            execution_id = ledger.create(
                kpi_id,
                params or None,
                actor,
                mode=mode,
                holder=holder,
                batch_id=batch_id,
                ignore_undeclared=True,
            )
        except KPIStoreError as error:
            errors.append(BatchError(kpi_id=kpi_id, message=str(error)))
            continue
        runs.append((execution_id, holder))
    return RecordedBatch(batch_id, len(kpi_ids), runs, errors)


def run_all(batch: RecordedBatch, run_held: Callable[[int, str], None], max_parallel: int) -> None:
    """Run a batch's held runs, a few at a time; one failure never stops the others."""
    held = [(eid, holder) for eid, holder in batch.runs if holder is not None]
    if not held:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(held)))) as pool:
        futures = [pool.submit(run_held, eid, holder) for eid, holder in held]
    for future in futures:
        if future.exception() is not None:
            log.error("a batch run ended with an unexpected error: %s", future.exception())


def finished_result(batch: RecordedBatch, runs: list[Execution]) -> BatchResult:
    """The outcome of a batch run now: every run that did not succeed is an error."""
    errors = list(batch.errors)
    errors += [
        BatchError(kpi_id=run.kpi_id, message=run.error or run.status)
        for run in runs
        if run.status != RunStatus.SUCCESS
    ]
    successful = sum(run.status == RunStatus.SUCCESS for run in runs)
    return BatchResult(
        batch_id=batch.batch_id,
        total=batch.total,
        successful=successful,
        failed=batch.total - successful,
        executions=runs,
        errors=errors,
    )


def queued_result(batch: RecordedBatch, runs: list[Execution]) -> BatchResult:
    """The outcome of queuing a batch: ``successful`` counts the queued runs."""
    return BatchResult(
        batch_id=batch.batch_id,
        total=batch.total,
        successful=len(runs),
        failed=len(batch.errors),
        executions=runs,
        errors=list(batch.errors),
    )
