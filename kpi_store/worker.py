"""``Worker``: a pool of threads that runs queued executions from the store.

Any number of workers, in any number of processes, can serve one store: claiming is
atomic, so each job runs once. Each worker also re-queues the jobs of dead workers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .queue import new_holder, process_worker_id

if TYPE_CHECKING:
    from .store import KPIStore

log = logging.getLogger(__name__)


class Worker:
    """Runs queued runs with ``concurrency`` threads until ``stop()``.

    Poll and recovery intervals default to the store's settings
    (``KPI_WORKER_POLL_S``, ``KPI_RECOVERY_INTERVAL_S``).
    """

    def __init__(
        self,
        store: KPIStore,
        concurrency: int = 2,
        poll_interval_s: float | None = None,
        recovery_interval_s: float | None = None,
    ):
        if concurrency < 1:
            raise ValueError("a worker needs at least one thread")
        self.queue = store.queue
        settings = self.queue.settings
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s or settings.worker_poll_s
        self.recovery_interval_s = recovery_interval_s or settings.recovery_interval_s
        self._chores = self._chore_list(store)
        self.worker_id = process_worker_id(f"worker-{uuid.uuid4().hex[:8]}")
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: set[int] = set()
        self._held_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> Worker:
        if self.running:
            return self
        self._stopping.clear()
        self.recover()
        self._threads = [
            threading.Thread(target=self._serve, name=f"kpi-worker-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        self._threads.append(
            threading.Thread(target=self._maintain, name="kpi-worker-recovery", daemon=True)
        )
        for thread in self._threads:
            thread.start()
        log.info("worker %s started with %s thread(s)", self.worker_id, self.concurrency)
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop taking jobs; let running ones finish for half of ``timeout``, then hand
        them back to the queue. Returns True when every thread has ended in time."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._join_until(time.monotonic() + timeout / 2)
        if self.running:
            with self._held_lock:
                held = list(self._held)
            for execution_id in held:
                self.queue.hand_back(execution_id)
        self._join_until(deadline)
        stopped = not self.running
        log.info("worker %s stopped%s", self.worker_id, "" if stopped else " (threads still busy)")
        return stopped

    def recover(self) -> list[int]:
        """Re-queue or fail the runs of workers that stopped beating."""
        return self.queue.recover()

    def _join_until(self, deadline: float) -> None:
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        while not self._stopping.is_set():
            holder = new_holder(self.worker_id)
            try:
                execution_id = self.queue.claim(holder)
            except sa.exc.SQLAlchemyError:
                log.exception("could not claim a job; trying again")
                execution_id = None
            if execution_id is None:
                self._stopping.wait(self.poll_interval_s)
                continue
            if self._stopping.is_set():  # claimed just as stop() began: not ours to start
                self.queue.release(execution_id, holder)
                return
            self._run(execution_id, holder)

    def _run(self, execution_id: int, holder: str) -> None:
        with self._held_lock:
            self._held.add(execution_id)
        try:
            self.queue.run(execution_id, holder)
        except Exception:
            log.exception("run %s ended with an unexpected error", execution_id)
        finally:
            with self._held_lock:
                self._held.discard(execution_id)

    def _chore_list(self, store: KPIStore) -> list[Chore]:
        """What the maintenance thread does besides running jobs, each at its own pace."""
        return [
            Chore(self.recover, self.recovery_interval_s),
            Chore(store.checkpoints.write_if_due, self.recovery_interval_s),
            Chore(store.alert_watch.catch_up, self.recovery_interval_s),
            Chore(store.prune_chore, store.settings.prune_interval_s),
            Chore(store.run_due_schedules, store.settings.schedule_poll_s),
            Chore(store.deliver_due, self.poll_interval_s),
        ]

    def _maintain(self) -> None:
        """Each chore when it is due: recovery of dead workers' runs, audit checkpoints, …"""
        tick = min(chore.every_s for chore in self._chores)
        while not self._stopping.is_set():
            for chore in self._chores:
                if self._stopping.is_set():
                    return
                chore.run_if_due(time.monotonic())
            self._stopping.wait(tick)


class Chore:
    """Something a worker does every ``every_s`` seconds; a failure is logged and tried
    again at the next turn, never ending the worker."""

    def __init__(self, action: Callable[[], object], every_s: float):
        self.action, self.every_s = action, every_s
        self.next_at = time.monotonic() + every_s

    def run_if_due(self, now: float) -> None:
        if now < self.next_at:
            return
        self.next_at = now + self.every_s
        try:
            self.action()
        except Exception:  # a chore must never end the worker
            log.exception(
                "%s failed; trying again later", getattr(self.action, "__name__", "a chore")
            )
