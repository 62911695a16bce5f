"""Stopping a run from any thread: its deadline, cancel requests, and the watchdog.

No signals (they work only on the main thread, and Streamlit and workers run elsewhere):
a watchdog thread interrupts the connection's running statement instead (SQLite
``interrupt()``, psycopg ``cancel_safe()``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from . import db

WATCHDOG_TICK_S = 0.05


class RunStopped(Exception):
    """The run was stopped on purpose: ``reason`` is "timeout" or "cancelled"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunControl:
    """What another thread uses to stop a run, and how the run learns it should stop."""

    execution_id: int
    timeout_s: float
    deadline: float
    cancel_event: threading.Event = field(default_factory=threading.Event)
    requeue: bool = False

    @classmethod
    def starting_now(cls, execution_id: int, timeout_s: float) -> RunControl:
        return cls(execution_id, timeout_s, time.monotonic() + timeout_s)

    def stop_and_requeue(self) -> None:
        """Stop the run and hand it back to the queue (a worker shutting down)."""
        self.requeue = True
        self.cancel_event.set()

    def stop_reason(self) -> str | None:
        if self.cancel_event.is_set():
            return "cancelled"
        if time.monotonic() >= self.deadline:
            return "timeout"
        return None

    def check(self) -> None:
        reason = self.stop_reason()
        if reason:
            raise RunStopped(reason)

    def remaining_ms(self) -> int:
        return max(1, int((self.deadline - time.monotonic()) * 1000))


class Watchdog:
    """Interrupts a connection's running statement when the run must stop."""

    def __init__(self, control: RunControl, interrupt: Callable[[], None]):
        self._control = control
        self._interrupt = interrupt
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="kpi-watchdog", daemon=True)

    @classmethod
    def over(cls, control: RunControl, connection: sa.engine.Connection) -> Watchdog:
        """A watchdog that interrupts ``connection``'s driver the way its dialect needs."""
        raw = db.driver(connection)
        if connection.dialect.name in ("sqlite", "duckdb"):
            return cls(control, raw.interrupt)
        return cls(control, getattr(raw, "cancel_safe", None) or raw.cancel)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(WATCHDOG_TICK_S):
            if self._control.stop_reason():
                with self._lock:
                    if not self._done.is_set():
                        self._interrupt()
                return
