"""Which series a run belongs to, and which series is a KPI's official number.

A KPI's runs form one series per parameter set: the bound values, defaults filled in,
without the period dates of a period KPI (those are the series' x axis). The official
series is the one for the KPI's pinned ``official_params`` (defaults for the rest); every
other run is an exploration, never mixed into the official number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import orjson

from .models import KPISpec
from .values import to_json_value


def _period_names(spec: KPISpec) -> tuple[str, ...]:
    return (spec.period.start, spec.period.end) if spec.period else ()


def series_params(spec: KPISpec, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that name a run's series: all but the period dates."""
    dropped = _period_names(spec)
    return {name: value for name, value in params.items() if name not in dropped}


def key_of(params: dict[str, Any]) -> str:
    """sha256 of the parameters' canonical JSON (the form runs store them in)."""
    canonical = orjson.dumps(
        params, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
    )
    return hashlib.sha256(canonical).hexdigest()


def series_key(spec: KPISpec, params: dict[str, Any]) -> str:
    """The series key of a run of ``spec`` with ``params`` (in their stored JSON form)."""
    return key_of(series_params(spec, params))


def period_of(spec: KPISpec, params: dict[str, Any]) -> tuple[dt.date | None, dt.date | None]:
    """A period KPI's run's start and end dates; (None, None) for other KPIs."""
    if spec.period is None:
        return None, None
    return _date(params.get(spec.period.start)), _date(params.get(spec.period.end))


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def official_params(spec: KPISpec) -> dict[str, Any] | None:
    """The official parameter set in stored JSON form, without period dates: the pinned
    values, defaults for the rest. None when a parameter has neither (nothing official)."""
    pinned = spec.official_params or {}
    chosen: dict[str, Any] = {}
    for param in spec.parameters:
        if param.name in _period_names(spec):
            continue
        value = pinned.get(param.name, param.default)
        if value is None:
            return None
        chosen[param.name] = to_json_value(value)
    return chosen


def official_key(spec: KPISpec) -> str | None:
    """The key of the official series (None when the KPI has no official parameter set)."""
    chosen = official_params(spec)
    return None if chosen is None else key_of(chosen)
