"""Running one claimed run to its end: load it, keep its heartbeat, read, record."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import ExecutionError, KPIStoreError, LostOwnership
from .heartbeat import ActiveRuns
from .querying import describe_error
from .runner import Runner
from .runs import RunLedger

log = logging.getLogger(__name__)


Admit = Callable[[str, int], "str | None"]  # (requested_by, kpi_id) -> why not, or None


def run_held(
    ledger: RunLedger,
    runner: Runner,
    active: ActiveRuns,
    execution_id: int,
    holder: str,
    admit: Admit,
) -> None:
    """Run a run ``holder`` holds to a final status (or back to the queue).

    The person who asked for it is checked again first (``admit``): someone demoted or
    deactivated since they queued it cannot run it. The query's own failures end the
    run; only a store that cannot record it raises (``ExecutionError``), after ending
    the run as failed when it still can.
    """
    try:
        job = ledger.load_job(execution_id, holder)
    except KPIStoreError as error:
        ledger.fail(execution_id, holder, str(error))
        return
    refusal = admit(job.requested_by, job.kpi_id)
    if refusal is not None:
        ledger.fail(execution_id, holder, refusal)
        return
    control = active.begin(execution_id, job.timeout_s, holder)
    try:
        result = runner.run(job, control, ledger.held(execution_id, holder))
        if result.requeue:
            ledger.release(execution_id, holder)
        else:
            ledger.finish(job, result)
        if result.interrupt is not None:
            raise result.interrupt
    except LostOwnership:
        log.warning("run %s was taken from this holder; leaving it", execution_id)
    except Exception as error:
        # The store itself failed (e.g. stayed locked): end the run rather than leave it
        # "running" for recovery to re-queue behind the user's back.
        log.exception("run %s could not be recorded", execution_id)
        message = f"The run could not be recorded: {describe_error(error)}"
        ledger.fail(execution_id, holder, message)
        raise ExecutionError(message) from None
    finally:
        active.end(execution_id, holder)
