"""The job queue as workers see it: claim, run, hand back, recover. Nothing more.

Queued runs are rows, so jobs survive restarts and any number of worker processes share
them; claiming is atomic (see ``RunLedger.claim_next``), so each job runs once.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .config import Settings
from .heartbeat import ActiveRuns
from .runs import RunLedger


def process_worker_id(label: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{label}"


def new_holder(worker_id: str) -> str:
    """A token for one claim of one run: threads of a worker never share it, so a run
    re-queued and claimed again by the same worker has a new holder."""
    return f"{worker_id}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class JobQueue:
    """What a worker needs from the store, and only that."""

    ledger: RunLedger
    active: ActiveRuns
    execute: Callable[[int, str], None]  # run a held run to its end

    @property
    def settings(self) -> Settings:
        return self.ledger.settings

    def claim(self, holder: str) -> int | None:
        """The id of the oldest queued run, now held by ``holder``; None when idle."""
        return self.ledger.claim_next(holder)

    def run(self, execution_id: int, holder: str) -> None:
        self.execute(execution_id, holder)

    def release(self, execution_id: int, holder: str) -> None:
        """Hand back a run claimed but not started."""
        self.ledger.release(execution_id, holder)

    def hand_back(self, execution_id: int) -> None:
        """Stop a run this process is running and put it back in the queue."""
        control = self.active.control(execution_id)
        if control is not None:
            control.stop_and_requeue()

    def recover(self) -> list[int]:
        """Re-queue or end runs whose worker stopped beating their heartbeat."""
        return self.ledger.recover_stale()
