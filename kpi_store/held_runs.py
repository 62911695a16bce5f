"""The guard on every write a holder makes to the run it holds.

A holder is one claim of one run (a worker thread's token, or a "run now" in this
process). Its writes match the run only while it is ``running`` for that token, so a
worker whose run was re-queued, cancelled or failed as lost can never write into it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import db, results
from .errors import LostOwnership
from .schema import kpi_execution_results as executions
from .vocabulary import RunStatus


def owned_by(execution_id: int, holder: str) -> sa.ColumnElement[bool]:
    """Matches the run only while ``holder`` holds it: the guard of every holder's write."""
    return sa.and_(
        executions.c.id == execution_id,
        executions.c.status == RunStatus.RUNNING,
        executions.c.worker_id == holder,
    )


class HeldRun:
    """The writes a holder makes to the run it holds while the query streams."""

    def __init__(self, engine: sa.engine.Engine, execution_id: int, holder: str):
        self.engine = engine
        self.execution_id = execution_id
        self.holder = holder

    def _update(self, connection: sa.engine.Connection, **values: Any) -> None:
        statement = (
            executions.update().where(owned_by(self.execution_id, self.holder)).values(**values)
        )
        if connection.execute(statement).rowcount != 1:
            raise LostOwnership(self.execution_id)

    def record_attempt(self, attempt: int) -> None:
        with db.write_tx(self.engine) as connection:
            self._update(connection, attempts=attempt, heartbeat_at=db.utcnow())

    def store(self, first_row: int, encoded: list[str], rows_read: int) -> None:
        """One batch of rows and the progress that goes with it, in one transaction.

        The progress UPDATE comes first and is the ownership check: on PostgreSQL it locks
        the run's row until commit; on SQLite the write transaction holds the lock already.
        """
        with db.write_tx(self.engine) as connection:
            self._update(connection, rows_read=rows_read, heartbeat_at=db.utcnow())
            if encoded:
                results.insert_rows(connection, self.execution_id, first_row, encoded)

    def discard_rows(self) -> None:
        """Remove rows of a failed attempt, unless another holder has the run now."""
        with db.write_tx(self.engine) as connection:
            owned = connection.execute(
                sa.select(executions.c.id)
                .where(owned_by(self.execution_id, self.holder))
                .with_for_update()
            ).first()
            if owned is not None:
                results.delete_rows(connection, self.execution_id)
