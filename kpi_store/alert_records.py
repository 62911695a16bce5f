"""The records alert rules return: a rule with its state, a subscription, a KPI's alerts
at a glance, one logged evaluation, and what testing a rule against a run would do."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from .alert_states import (
    AlertState,
    Condition,
    ConditionKind,
    Observation,
    Outcome,
    Policy,
    RuleState,
)
from .formats import format_value
from .models import KPI
from .notification_records import NotificationKind
from .notifications import person_key


class AlertRule(BaseModel):
    """A rule, its settings and where it stands; ``params`` None watches the official set."""

    model_config = ConfigDict(frozen=True)

    id: int
    kpi_id: int
    name: str
    params: dict[str, Any] | None
    series_key: str | None
    condition: ConditionKind
    op: str | None
    value: float | None
    include_amber: bool
    for_runs: int
    recover_runs: int
    renotify_after_s: float | None
    notify_on_no_data: bool
    notify_on_error: bool
    muted_until: dt.datetime | None
    webhooks: tuple[str, ...]
    active: bool
    state: AlertState
    state_since: dt.datetime
    met_streak: int
    good_streak: int
    firing_since: dt.datetime | None
    firing_notified: bool
    last_evaluated_run_id: int | None
    last_notified_at: dt.datetime | None
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    updated_by: str
    subscribers: tuple[str, ...] = ()

    @property
    def official(self) -> bool:
        return self.params is None

    def subscribed(self, person: str) -> bool:
        """Whether ``person`` is told about this rule (emails compared in any case)."""
        key = person_key(person)
        return key is not None and key in {person_key(s) for s in self.subscribers}

    @property
    def rule_condition(self) -> Condition:
        return Condition(self.condition, self.op, self.value, self.include_amber)

    def describe(self, unit: str = "") -> str:
        return self.rule_condition.describe(unit)

    @property
    def policy(self) -> Policy:
        after = self.renotify_after_s
        return Policy(
            for_runs=self.for_runs,
            recover_runs=self.recover_runs,
            renotify_after=None if after is None else dt.timedelta(seconds=after),
            notify_on_no_data=self.notify_on_no_data,
            notify_on_error=self.notify_on_error,
            muted_until=self.muted_until,
        )

    @property
    def rule_state(self) -> RuleState:
        return RuleState(
            AlertState(self.state),
            self.state_since,
            self.met_streak,
            self.good_streak,
            self.firing_since,
            self.firing_notified,
            self.last_notified_at,
        )

    def muted(self, now: dt.datetime) -> bool:
        return self.policy.muted(now)


class AlertSubscription(BaseModel):
    """Someone told when a rule notifies."""

    model_config = ConfigDict(frozen=True)

    rule_id: int
    rule_name: str
    kpi_id: int
    person: str
    state: AlertState
    subscribed_at: dt.datetime


class KPIAlerts(BaseModel):
    """A KPI's active rules at a glance (Overview cards): the worst state and counts."""

    model_config = ConfigDict(frozen=True)

    kpi_id: int
    state: AlertState
    rules: int
    firing: int
    muted: int


class AlertEvaluation(BaseModel):
    """One run seen by one rule (``run_id`` None: a repeat while firing, between runs):
    the figures, the states before and after, and whether it notified and why (not)."""

    model_config = ConfigDict(frozen=True)

    id: int
    rule_id: int
    run_id: int | None
    evaluated_at: dt.datetime
    outcome: Outcome
    condition_met: bool | None
    value: float | None
    target: float | None
    change_pct: float | None
    detail: str
    state_before: AlertState
    state_after: AlertState
    notification: NotificationKind | None  # what was due, told or held back
    notified: bool
    recipients: int
    reason: str


class RuleTest(BaseModel):
    """What evaluating the rule against its series' newest run would do now, without
    changing its state or telling anyone (``run_id`` None: the series has no run yet)."""

    model_config = ConfigDict(frozen=True)

    rule_id: int
    run_id: int | None
    outcome: Outcome
    condition_met: bool | None
    value: float | None
    target: float | None
    change_pct: float | None
    detail: str
    state_before: AlertState
    state_after: AlertState
    would_notify: NotificationKind | None
    muted: bool
    reason: str


def kpi_alerts(rules: Iterable[AlertRule], now: dt.datetime) -> dict[int, KPIAlerts]:
    """Per KPI: the worst state of its active rules, how many fire and how many are muted."""
    grouped: dict[int, list[AlertRule]] = {}
    for rule in rules:
        if rule.active:
            grouped.setdefault(rule.kpi_id, []).append(rule)
    return {
        kpi_id: KPIAlerts(
            kpi_id=kpi_id,
            state=max((AlertState(r.state) for r in group), key=lambda s: s.severity),
            rules=len(group),
            firing=sum(r.state == AlertState.FIRING for r in group),
            muted=sum(r.muted(now) for r in group),
        )
        for kpi_id, group in grouped.items()
    }


SAYS = {
    "firing": "is firing",
    "renotify": "is still firing",
    "recovered": "has recovered",
    "no_data": "has no data",
    "error": "could not be evaluated",
}


def summary_line(rule: AlertRule, kpi: KPI, seen: Observation, kind: str) -> str:
    """One line of plain text: what happened, to which KPI, by which figures."""
    value = format_value(seen.value, kpi.unit)
    return (
        f"{kpi.name}: '{rule.name}' {SAYS.get(kind, kind)} ({rule.describe(kpi.unit)}); "
        f"value {value}; {seen.detail}"
    )
