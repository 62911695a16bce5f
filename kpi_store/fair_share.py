"""Per-person limits on running and queued runs, so one person cannot fill the queue."""

from __future__ import annotations

import sqlalchemy as sa

from .config import Settings
from .errors import ValidationError
from .schema import kpi_execution_results as executions
from .vocabulary import RunStatus


def check(
    connection: sa.engine.Connection,
    settings: Settings,
    person: str,
    running: bool,
    batch_id: str | None,
) -> None:
    """Refuse a run that would give ``person`` more than their share of the workers.

    A queued run counts against the runs the person has queued. A run now counts against
    the person's running runs, where a batch run now takes one place however many KPIs it
    holds (it runs a few at a time in its caller's threads): its first run needs a free
    place, the rest follow it. Inside ``create``'s write transaction: SQLite's write lock,
    or on PostgreSQL a lock per person, makes the count and the insert one step.
    """
    if connection.dialect.name == "postgresql":  # 7_300_452: this lock's class, any constant
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(7300452, hashtext(:person))"),
            {"person": person},
        )
    limit = settings.max_running_per_user if running else settings.max_queued_per_user
    count = _places_taken(connection, person, running, batch_id)
    if count is not None and count >= limit:
        if running:
            message = (
                f"{person} already has {count} runs going, the most one person may run at "
                f"once ({limit}, KPI_MAX_RUNNING_PER_USER). Wait for one to finish, or queue "
                "the run in the background."
            )
        else:
            message = (
                f"{person} already has {count} runs queued, the most one person may queue "
                f"({limit}, KPI_MAX_QUEUED_PER_USER). Wait for some to run first."
            )
        raise ValidationError(message, {"actor": message})


def _places_taken(
    connection: sa.engine.Connection, person: str, running: bool, batch_id: str | None
) -> int | None:
    """How many places the person holds now; None when their batch holds one already."""
    status = RunStatus.RUNNING if running else RunStatus.PENDING
    mine = sa.and_(executions.c.requested_by == person, executions.c.status == status)
    if not running:
        return connection.execute(
            sa.select(sa.func.count()).select_from(executions).where(mine)
        ).scalar_one()
    if batch_id is not None:
        same_batch = sa.select(executions.c.id).where(mine, executions.c.batch_id == batch_id)
        if connection.execute(same_batch.limit(1)).first():
            return None  # the batch holds its place already
    single = sa.select(sa.func.count()).where(mine, executions.c.batch_id.is_(None))
    batches = sa.select(sa.func.count(sa.distinct(executions.c.batch_id))).where(
        mine, executions.c.batch_id.is_not(None)
    )
    return connection.execute(single).scalar_one() + connection.execute(batches).scalar_one()
