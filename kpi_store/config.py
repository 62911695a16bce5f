"""Settings read from the environment, with the defaults a laptop install wants."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_URL = "sqlite:///data/kpi_store.db"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Store-wide defaults; each can be set by the environment variable in its comment."""

    url: str = DEFAULT_URL  # KPI_STORE_URL
    default_timeout_s: float = 60.0  # KPI_DEFAULT_TIMEOUT_S
    default_max_retries: int = 2  # KPI_DEFAULT_MAX_RETRIES
    row_cap: int = 1_000_000  # KPI_ROW_CAP
    heartbeat_timeout_s: float = 30.0  # KPI_HEARTBEAT_TIMEOUT_S

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            url=os.environ.get("KPI_STORE_URL") or DEFAULT_URL,
            default_timeout_s=_float("KPI_DEFAULT_TIMEOUT_S", cls.default_timeout_s),
            default_max_retries=_int("KPI_DEFAULT_MAX_RETRIES", cls.default_max_retries),
            row_cap=_int("KPI_ROW_CAP", cls.row_cap),
            heartbeat_timeout_s=_float("KPI_HEARTBEAT_TIMEOUT_S", cls.heartbeat_timeout_s),
        )
