"""This process's running runs: their controls, heartbeats and relayed cancel requests."""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from .runs import RunLedger
from .watchdog import RunControl

log = logging.getLogger(__name__)


class ActiveRuns:
    """Beats the heartbeat of every run this process holds, and stops those asked to cancel."""

    def __init__(self, ledger: RunLedger, interval_s: float):
        self._ledger = ledger
        self._interval = interval_s
        self._controls: dict[int, RunControl] = {}
        self._holders: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, execution_id: int, timeout_s: float, holder: str) -> RunControl:
        control = RunControl.starting_now(execution_id, timeout_s)
        with self._lock:
            self._holders[execution_id] = holder
            self._controls[execution_id] = control
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._beat, name="kpi-heartbeat", daemon=True
                )
                self._thread.start()
        return control

    def end(self, execution_id: int, holder: str) -> None:
        with self._lock:
            if self._holders.get(execution_id) == holder:
                self._controls.pop(execution_id, None)
                self._holders.pop(execution_id, None)

    def control(self, execution_id: int) -> RunControl | None:
        with self._lock:
            return self._controls.get(execution_id)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                controls = dict(self._controls)
                held: dict[str, list[int]] = {}
                for execution_id, holder in self._holders.items():
                    held.setdefault(holder, []).append(execution_id)
            if not controls:
                continue
            try:
                cancelled = self._ledger.beat(held)
            except sa.exc.SQLAlchemyError:
                log.exception("heartbeat failed; trying again in %s s", self._interval)
                continue
            for execution_id in cancelled:
                if execution_id in controls:
                    controls[execution_id].cancel_event.set()
