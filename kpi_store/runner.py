"""The retry loop around one run's read: it returns what happened and writes no status.

Transient faults (locked or busy database, dropped connection) are retried with
exponential backoff and jitter; anything else, a timeout or a cancel ends the run at
once. Recording the result is ``runs.RunLedger``'s job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import tenacity

from . import datasources as sources
from .config import Settings
from .errors import LostOwnership
from .models import KPISpec
from .querying import Outcome, RowSink, describe_error, is_transient, read_into
from .values import BoundParams
from .vocabulary import RunStatus
from .watchdog import RunControl, RunStopped

log = logging.getLogger(__name__)


class RunSink(RowSink, Protocol):
    """The run's row in the store, as the runner may touch it while it holds the run."""

    def record_attempt(self, attempt: int) -> None: ...

    def discard_rows(self) -> None: ...


@dataclass(frozen=True)
class Job:
    """Everything a run needs, read once from the store when it starts."""

    execution_id: int
    worker_id: str
    spec: KPISpec
    source_url: str
    params: BoundParams
    requested_by: str
    kpi_id: int
    kpi_version: int
    timeout_s: float
    max_retries: int


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its final status, or ``requeue`` when it goes back to the queue."""

    status: RunStatus
    attempts: int
    elapsed_ms: float
    retries: list[str] = field(default_factory=list)
    error: str | None = None
    outcome: Outcome | None = None
    requeue: bool = False
    interrupt: BaseException | None = None  # re-raise after recording (e.g. SystemExit)


class Runner:
    """Reads a KPI's query for a run the caller holds, retrying transient faults."""

    def __init__(self, source_engines: sources.SourceEngines, settings: Settings):
        self.source_engines = source_engines
        self.settings = settings

    def retry_wait(self) -> tenacity.wait.wait_base:
        return tenacity.wait_exponential_jitter(
            multiplier=self.settings.retry_wait_s,
            max=self.settings.retry_max_wait_s,
            jitter=self.settings.retry_wait_s,
        )

    def run(self, job: Job, control: RunControl, sink: RunSink) -> RunResult:
        """Read to an outcome; raises only ``LostOwnership`` (the run is not ours any more)."""
        started = time.monotonic()
        retries: list[str] = []
        attempts = 0

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            reason = describe_error(error) if error else "unknown fault"
            retries.append(f"attempt {state.attempt_number}: {reason}")
            log.warning(
                "run %s: attempt %s failed with a transient fault, retrying: %s",
                job.execution_id,
                state.attempt_number,
                reason,
            )
            sink.discard_rows()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(job.max_retries + 1),
            wait=self.retry_wait(),
            retry=tenacity.retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            engine = self.source_engines.get(job.source_url)
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    sink.record_attempt(attempts)
                    control.check()
                    outcome = read_into(engine, job.spec, job.params, control, sink, self.settings)
        except LostOwnership:
            raise
        except BaseException as error:
            elapsed = _ms_since(started)
            if control.requeue:
                return RunResult(RunStatus.PENDING, attempts, elapsed, retries, requeue=True)
            status, message = _classify(error, control)
            interrupt = None if isinstance(error, Exception) else error
            return RunResult(
                status, max(attempts, 1), elapsed, retries, error=message, interrupt=interrupt
            )
        return RunResult(RunStatus.SUCCESS, attempts, _ms_since(started), retries, outcome=outcome)


def _classify(error: BaseException, control: RunControl) -> tuple[RunStatus, str]:
    reason = error.reason if isinstance(error, RunStopped) else control.stop_reason()
    if reason == "timeout":
        return RunStatus.TIMEOUT, f"Stopped at the time limit of {control.timeout_s:g} s."
    if reason == "cancelled":
        return RunStatus.CANCELLED, "Cancelled before it finished."
    if not isinstance(error, Exception):
        return RunStatus.FAILED, "The run was interrupted (the process is stopping)."
    return RunStatus.FAILED, describe_error(error)


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
