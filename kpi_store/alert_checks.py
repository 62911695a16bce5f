"""Checking an alert rule's settings against its KPI before they are stored: the
condition and its operator and value, the watched parameter set, the streak lengths,
the repeat interval, the flags and the webhook channels. ``checked`` returns the
columns to write; bad input raises ValidationError naming the field."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from . import db, notifications, series
from .alert_states import OPS, Condition, ConditionKind
from .errors import NotFoundError, ValidationError
from .models import KPI
from .validation import bind_parameters
from .values import text_problem

MAX_RUNS = 1_000  # for_runs / recover_runs
MAX_RENOTIFY_S = 366 * 86_400

FIELDS = (
    "name",
    "condition",
    "op",
    "value",
    "include_amber",
    "params",
    "for_runs",
    "recover_runs",
    "renotify_after_s",
    "notify_on_no_data",
    "notify_on_error",
    "webhooks",
    "active",
)
RESETTING = ("condition", "op", "value", "include_amber", "params", "for_runs", "recover_runs")


def checked(connection: sa.engine.Connection, kpi: KPI, fields: dict[str, Any]) -> dict[str, Any]:
    """A rule's settings checked against its KPI, as column values; ValidationError names
    the first field at fault."""
    condition = _condition(fields)
    params, key = _watched(kpi, fields.get("params"))
    if condition.kind == ConditionKind.OFF_TARGET:
        watched = params if params is not None else series.official_params(kpi)
        if kpi.target_for(watched) is None:
            raise _bad("condition", f"KPI '{kpi.name}' has no target for this parameter set")
    return dict(
        name=_name(fields.get("name")),
        condition=condition.kind.value,
        op=condition.op,
        threshold=condition.value,
        include_amber=condition.include_amber,
        params=None if params is None else db.dumps(params),
        series_key=key,
        for_runs=_count(fields.get("for_runs", 1), "for_runs"),
        recover_runs=_count(fields.get("recover_runs", 1), "recover_runs"),
        renotify_after_s=_seconds(fields.get("renotify_after_s")),
        notify_on_no_data=_flag(fields.get("notify_on_no_data", False), "notify_on_no_data"),
        notify_on_error=_flag(fields.get("notify_on_error", True), "notify_on_error"),
        webhooks=db.dumps(_webhooks(connection, fields.get("webhooks", ()))),
        active=_flag(fields.get("active", True), "active"),
    )


def _bad(field: str, message: str) -> ValidationError:
    return ValidationError(f"{message}.", {field: message})


def _name(name: Any) -> str:
    text = name.strip() if isinstance(name, str) else ""
    problem = "is required" if not text else text_problem(text, 200)
    if problem:
        raise _bad("name", f"The rule's name {problem}")
    return text


def _condition(fields: dict[str, Any]) -> Condition:
    try:
        kind = ConditionKind(str(fields.get("condition")))
    except ValueError:
        kinds = ", ".join(ConditionKind)
        raise _bad("condition", f"The condition must be one of {kinds}") from None
    op, value, amber = fields.get("op"), fields.get("value"), fields.get("include_amber", False)
    _flag(amber, "include_amber")
    if kind == ConditionKind.OFF_TARGET:
        if op is not None or value is not None:
            raise _bad("op", "An off-target rule takes no operator or value (the KPI's target)")
        return Condition(kind, include_amber=bool(amber))
    if amber:
        raise _bad("include_amber", "Only an off-target rule can include amber")
    if op not in OPS:
        raise _bad("op", f"The operator must be one of {' '.join(OPS)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad("value", f"A {kind} rule needs a finite number to compare with")
    return Condition(kind, op, float(value))


def _watched(kpi: KPI, params: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The parameter set (JSON form, no period dates) and series key, or (None, None) for
    the official set, which must exist."""
    if params is None:
        if series.official_key(kpi) is None:
            raise _bad(
                "params",
                f"KPI '{kpi.name}' has no official parameter set (a parameter has neither a "
                "default nor a pinned value); name the parameter set the rule watches",
            )
        return None, None
    if not isinstance(params, dict):
        raise _bad("params", "The parameter set must be given as name = value pairs")
    period = (kpi.period.start, kpi.period.end) if kpi.period else ()
    dated = sorted(set(params) & set(period))
    if dated:
        raise _bad("params", f"A rule watches every period: leave out {', '.join(dated)}")
    trimmed = kpi.spec().model_copy(
        update={"parameters": [p for p in kpi.parameters if p.name not in period]}
    )
    bound = bind_parameters(trimmed, params)
    return bound.json, series.key_of(bound.json)


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RUNS:
        raise _bad(field, f"{field} must be a whole number from 1 to {MAX_RUNS}")
    return value


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    number = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        number = -1.0
    if not 0 < number <= MAX_RENOTIFY_S:
        raise _bad("renotify_after_s", "renotify_after_s must be seconds, above 0, up to a year")
    return float(number)


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(field, f"{field} must be true or false")
    return value


def _webhooks(connection: sa.engine.Connection, names: Any) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise _bad("webhooks", "webhooks must be a list of webhook channel names")
    chosen: list[str] = []
    for name in names:
        try:
            channel = notifications.webhook(connection, name)
        except NotFoundError as unknown:
            raise _bad("webhooks", str(unknown).rstrip(".")) from None
        if channel.name not in chosen:
            chosen.append(channel.name)
    return chosen
