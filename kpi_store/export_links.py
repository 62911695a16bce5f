"""Short-lived download tokens for streaming a run's rows (CSV, XLSX, Parquet) over HTTP.

A page asks the store for a link (``KPIStore.export_link``); the token in it names one
run, the person who asked and whether the CSV is for Excel. It is kept in the memory of
the store that issued it (one store per server process), works once, and expires after a
few minutes, so a link that leaks (a browser history, a proxy log) is of no use. The
HTTP route that serves the link hands the token back (``KPIStore.open_export``) and
streams the rows.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LINK_TTL_S = 300.0
MAX_LIVE_TOKENS = 10_000


@dataclass(frozen=True)
class ExportGrant:
    """What a token allows: every row of ``execution_id`` as CSV, exported by ``actor``."""

    token: str
    execution_id: int
    actor: str
    excel: bool
    expires_at: float  # time.monotonic() of this process
    sort: tuple[Any, ...] = ()  # the view the link exports: its sort and filters
    filters: tuple[Any, ...] = ()
    format: str = "csv"  # csv, xlsx or parquet


class ExportTokens:
    """Single-use tokens with a deadline, in memory, safe to use from any thread."""

    def __init__(
        self, ttl_s: float = LINK_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._grants: dict[str, ExportGrant] = {}
        self._lock = threading.Lock()

    def issue(
        self,
        execution_id: int,
        actor: str,
        excel: bool,
        sort: tuple[Any, ...] = (),
        filters: tuple[Any, ...] = (),
        format: str = "csv",
    ) -> ExportGrant:
        now = self._clock()
        grant = ExportGrant(
            token=secrets.token_urlsafe(24),
            execution_id=execution_id,
            actor=actor,
            excel=excel,
            expires_at=now + self.ttl_s,
            sort=sort,
            filters=filters,
            format=format,
        )
        with self._lock:
            self._forget_expired(now)
            if len(self._grants) >= MAX_LIVE_TOKENS:  # never grow without bound
                oldest = min(self._grants.values(), key=lambda g: g.expires_at)
                del self._grants[oldest.token]
            self._grants[grant.token] = grant
        return grant

    def redeem(self, token: str) -> ExportGrant | None:
        """The grant of ``token`` if it is live; it cannot be used again."""
        with self._lock:
            grant = self._grants.pop(token, None)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    def _forget_expired(self, now: float) -> None:
        for token in [t for t, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[token]
