"""An alert rule's conditions and state machine: pure functions, no database.

Each finished run of the watched series becomes an ``Observation`` (the condition met or
not, no data, or an error); ``step`` moves the rule's ``RuleState`` and says whether to
notify and, when not, why not. The store applies the ``Decision`` in one transaction, so
"why didn't it fire?" always has an answer in the evaluation log.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from .notification_records import NotificationKind
from .vocabulary import RAG


class AlertState(StrEnum):
    OK = "ok"
    PENDING = "pending"  # the condition met, fewer than ``for_runs`` times in a row
    FIRING = "firing"
    RECOVERING = "recovering"  # good again, fewer than ``recover_runs`` times in a row
    NO_DATA = "no_data"  # no rows or a NULL value (never read as 0)
    ERROR = "error"  # the run failed or timed out, or the rule could not be evaluated

    @property
    def severity(self) -> int:
        """Higher is worse: what an Overview card shows when a KPI has several rules."""
        return len(WORST_FIRST) - WORST_FIRST.index(self)


WORST_FIRST: tuple[AlertState, ...] = (
    AlertState.FIRING,
    AlertState.ERROR,
    AlertState.NO_DATA,
    AlertState.RECOVERING,
    AlertState.PENDING,
    AlertState.OK,
)


class ConditionKind(StrEnum):
    OFF_TARGET = "off_target"  # red by the KPI's direction and tolerance (amber optional)
    THRESHOLD = "threshold"  # the value compared with a number
    CHANGE = "change"  # the % change against the previous run (or period) compared


OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class Outcome(StrEnum):
    """What one run said about the condition (``SKIPPED``: the run was not evaluated)."""

    MET = "met"
    NOT_MET = "not_met"
    NO_DATA = "no_data"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Condition:
    kind: ConditionKind
    op: str | None = None
    value: float | None = None
    include_amber: bool = False

    def describe(self, unit: str = "") -> str:
        """The condition in words: "off target (red or amber)", "value < 10", …"""
        if self.kind == ConditionKind.OFF_TARGET:
            return "off target (red or amber)" if self.include_amber else "off target (red)"
        number = _number(self.value)
        if self.kind == ConditionKind.THRESHOLD:
            return f"value {self.op} {number}{f' {unit}' if unit else ''}"
        return f"change {self.op} {number} %"


@dataclass(frozen=True)
class Observation:
    """One run seen through the condition: met or not, with the figures that decided."""

    outcome: Outcome
    value: float | None = None
    target: float | None = None
    change_pct: float | None = None
    detail: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the condition held (None: no data, an error, or skipped)."""
        if self.outcome in (Outcome.MET, Outcome.NOT_MET):
            return self.outcome == Outcome.MET
        return None


def observe(
    condition: Condition,
    value: float | None,
    *,
    rag: RAG | None = None,
    target: float | None = None,
    base: float | None = None,
) -> Observation:
    """A successful run's value against ``condition``: ``rag`` and ``target`` are the
    run's status and target, ``base`` the previous value (for a % change)."""
    if value is None:
        return Observation(Outcome.NO_DATA, None, target, None, "no rows, or a NULL value")
    if condition.kind == ConditionKind.OFF_TARGET:
        return _off_target(condition, value, rag, target)
    if condition.kind == ConditionKind.THRESHOLD:
        return _compared(condition, value, value, target, None, "value")
    if base is None:
        return Observation(Outcome.NO_DATA, value, target, None, "no previous value to compare")
    if base == 0:
        return Observation(Outcome.NO_DATA, value, target, None, "the previous value is 0")
    change = (value - base) / abs(base) * 100
    return _compared(condition, change, value, target, change, "change %")


def _off_target(
    condition: Condition, value: float, rag: RAG | None, target: float | None
) -> Observation:
    if rag is None or target is None:
        return Observation(Outcome.ERROR, value, None, None, "the KPI has no target for this run")
    met = rag == RAG.RED or (condition.include_amber and rag == RAG.AMBER)
    detail = f"{rag} against the target {_number(target)}"
    return Observation(Outcome.MET if met else Outcome.NOT_MET, value, target, None, detail)


def _compared(
    condition: Condition,
    seen: float,
    value: float,
    target: float | None,
    change: float | None,
    what: str,
) -> Observation:
    assert condition.op is not None and condition.value is not None  # checked on save
    met = OPS[condition.op](seen, condition.value)
    sign = condition.op if met else f"not {condition.op}"
    detail = f"{what} {_number(seen)} {sign} {_number(condition.value)}"
    return Observation(Outcome.MET if met else Outcome.NOT_MET, value, target, change, detail)


def error(message: str | None) -> Observation:
    """A run that failed or timed out."""
    return Observation(Outcome.ERROR, detail=message or "the run failed")


@dataclass(frozen=True)
class Policy:
    """The parts of a rule that decide its moves and its notifications."""

    for_runs: int = 1
    recover_runs: int = 1
    renotify_after: dt.timedelta | None = None
    notify_on_no_data: bool = False
    notify_on_error: bool = True
    muted_until: dt.datetime | None = None

    def muted(self, now: dt.datetime) -> bool:
        return self.muted_until is not None and now < self.muted_until


@dataclass(frozen=True)
class RuleState:
    """Where a rule stands. ``firing_since`` is set while an incident is open (firing,
    recovering, or no data / an error in between); ``firing_notified`` says whether its
    firing has been told (a muted start is told once the mute ends)."""

    state: AlertState
    since: dt.datetime
    met_streak: int = 0
    good_streak: int = 0
    firing_since: dt.datetime | None = None
    firing_notified: bool = False
    last_notified_at: dt.datetime | None = None


def fresh(now: dt.datetime, last_notified_at: dt.datetime | None = None) -> RuleState:
    """A new or reset rule: ok, no streaks, no open incident."""
    return RuleState(AlertState.OK, now, last_notified_at=last_notified_at)


@dataclass(frozen=True)
class Decision:
    """One evaluation's result: the state before and after, what to notify (``kind``,
    None for nothing) and the reason; ``muted`` when a due notification was held back."""

    before: RuleState
    after: RuleState
    kind: NotificationKind | None
    muted: bool
    reason: str

    @property
    def notify(self) -> bool:
        return self.kind is not None and not self.muted


def step(current: RuleState, seen: Observation, policy: Policy, now: dt.datetime) -> Decision:
    """The rule's next state after one observed run, and whether (and why not) to notify."""
    if seen.outcome == Outcome.MET:
        return _met(current, policy, now)
    if seen.outcome == Outcome.NOT_MET:
        return _good(current, policy, now)
    if seen.outcome in (Outcome.NO_DATA, Outcome.ERROR):
        return _gap(current, seen.outcome, policy, now)
    return Decision(current, current, None, False, f"not evaluated: {seen.detail}")


def reminder(current: RuleState, policy: Policy, now: dt.datetime) -> Decision | None:
    """A repeat due between runs while the rule keeps firing; None when none is due (not
    firing, never told, no repeat configured, too soon) or it is muted."""
    every, told = policy.renotify_after, current.last_notified_at
    if current.state != AlertState.FIRING or not current.firing_notified:
        return None
    if every is None or told is None or now < told + every or policy.muted(now):
        return None
    after = replace(current, last_notified_at=now)
    why = f"still firing since {_when(current.firing_since)}: repeated between runs"
    return Decision(current, after, "renotify", False, why)


def _moved(current: RuleState, state: AlertState, now: dt.datetime, **changes: object) -> RuleState:
    since = current.since if state == current.state else now
    return replace(current, state=state, since=since, **changes)  # type: ignore[arg-type]


def _met(current: RuleState, policy: Policy, now: dt.datetime) -> Decision:
    streak = current.met_streak + 1
    if current.firing_since is not None:  # the incident is still open: firing again
        after = _moved(current, AlertState.FIRING, now, met_streak=streak, good_streak=0)
        return _while_firing(current, after, policy, now)
    if streak < policy.for_runs:
        after = _moved(current, AlertState.PENDING, now, met_streak=streak, good_streak=0)
        why = f"condition met {streak} of the {policy.for_runs} runs in a row it needs to fire"
        return Decision(current, after, None, False, why)
    after = _moved(
        current,
        AlertState.FIRING,
        now,
        met_streak=streak,
        good_streak=0,
        firing_since=now,
        firing_notified=False,
    )
    return _send(current, after, "firing", policy, now, "started firing")


def _while_firing(
    current: RuleState, after: RuleState, policy: Policy, now: dt.datetime
) -> Decision:
    if not after.firing_notified:
        return _send(current, after, "firing", policy, now, "firing, not told yet (it was muted)")
    told = _when(after.last_notified_at)
    if policy.renotify_after is None:
        why = f"still firing: already notified at {told}; no repeat configured"
        return Decision(current, after, None, False, why)
    due = (after.last_notified_at or now) + policy.renotify_after
    if now < due:
        why = f"still firing: already notified at {told}; repeats from {_when(due)}"
        return Decision(current, after, None, False, why)
    return _send(current, after, "renotify", policy, now, f"still firing since {told}: repeated")


def _good(current: RuleState, policy: Policy, now: dt.datetime) -> Decision:
    if current.firing_since is None:
        after = _moved(current, AlertState.OK, now, met_streak=0, good_streak=0)
        was = "" if current.state == AlertState.OK else f" ({current.state} cleared)"
        return Decision(current, after, None, False, f"condition not met{was}")
    streak = current.good_streak + 1
    if streak < policy.recover_runs:
        after = _moved(current, AlertState.RECOVERING, now, met_streak=0, good_streak=streak)
        why = f"condition cleared {streak} of the {policy.recover_runs} runs in a row it needs"
        return Decision(current, after, None, False, why)
    after = _moved(
        current,
        AlertState.OK,
        now,
        met_streak=0,
        good_streak=0,
        firing_since=None,
        firing_notified=False,
    )
    if not current.firing_notified:
        why = "recovered; its firing was never told (muted), so neither is the recovery"
        return Decision(current, after, None, False, why)
    return _send(current, after, "recovered", policy, now, "recovered")


def _gap(current: RuleState, outcome: Outcome, policy: Policy, now: dt.datetime) -> Decision:
    state = AlertState.NO_DATA if outcome == Outcome.NO_DATA else AlertState.ERROR
    after = _moved(current, state, now, met_streak=0, good_streak=0)
    if current.state == state:
        return Decision(current, after, None, False, f"still {state}: told only on entering it")
    wanted = policy.notify_on_no_data if state == AlertState.NO_DATA else policy.notify_on_error
    if not wanted:
        return Decision(current, after, None, False, f"not configured to notify on {state}")
    kind: NotificationKind = "no_data" if state == AlertState.NO_DATA else "error"
    return _send(current, after, kind, policy, now, f"entered {state}")


def _send(
    current: RuleState,
    after: RuleState,
    kind: NotificationKind,
    policy: Policy,
    now: dt.datetime,
    why: str,
) -> Decision:
    if policy.muted(now):
        return Decision(
            current, after, kind, True, f"{why}; muted until {_when(policy.muted_until)}"
        )
    told = after.firing_notified or kind in ("firing", "renotify")
    after = replace(after, last_notified_at=now, firing_notified=told)
    return Decision(current, after, kind, False, why)


def _number(value: float | None) -> str:
    """A figure in a reason: 1,500 / 10.1 / -15.25 (six significant digits at most)."""
    if value is None:
        return "none"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.6g}"


def _when(moment: dt.datetime | None) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"
