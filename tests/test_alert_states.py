"""The alert state machine and its conditions, as pure functions (no database): every
transition, every notification and every reason for not notifying."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from kpi_store.alert_states import (
    WORST_FIRST,
    AlertState,
    Condition,
    ConditionKind,
    Decision,
    Observation,
    Outcome,
    Policy,
    error,
    fresh,
    observe,
    reminder,
    step,
)
from kpi_store.vocabulary import RAG

T0 = dt.datetime(2030, 1, 1, 8, 0)
MET = Observation(Outcome.MET, 5.0)
GOOD = Observation(Outcome.NOT_MET, 50.0)
EMPTY = Observation(Outcome.NO_DATA)
FAILED = error("the run failed: no such table: metric")
OK, PENDING, FIRING = AlertState.OK, AlertState.PENDING, AlertState.FIRING
RECOVERING, NO_DATA, ERROR = AlertState.RECOVERING, AlertState.NO_DATA, AlertState.ERROR


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def walk(policy: Policy, seen: Sequence[Observation], every_min: float = 1) -> list[Decision]:
    """Each observation one after the other, ``every_min`` minutes apart."""
    state, decisions = fresh(T0), []
    for n, observation in enumerate(seen, 1):
        decision = step(state, observation, policy, at(n * every_min))
        decisions.append(decision)
        state = decision.after
    return decisions


def states(decisions: list[Decision]) -> list[AlertState]:
    return [d.after.state for d in decisions]


def told(decisions: list[Decision]) -> list[str | None]:
    return [d.kind if d.notify else None for d in decisions]


# -- ok, pending, firing, recovering ----------------------------------------------------------


def test_it_fires_after_for_runs_in_a_row_and_tells_once() -> None:
    decisions = walk(Policy(for_runs=2), [MET, MET, MET])
    assert states(decisions) == [PENDING, FIRING, FIRING]
    assert told(decisions) == [None, "firing", None]
    assert decisions[0].reason == "condition met 1 of the 2 runs in a row it needs to fire"
    assert decisions[2].reason.startswith("still firing: already notified at 2030-01-01 08:02")
    assert decisions[1].after.firing_since == at(2) and decisions[2].after.since == at(2)


def test_a_good_run_clears_pending_and_the_streak_starts_again() -> None:
    decisions = walk(Policy(for_runs=2), [MET, GOOD, MET, MET])
    assert states(decisions) == [PENDING, OK, PENDING, FIRING]
    assert decisions[1].reason == "condition not met (pending cleared)"


def test_for_runs_one_fires_at_once() -> None:
    assert states(walk(Policy(), [MET])) == [FIRING]


def test_it_recovers_after_recover_runs_and_tells_the_recovery() -> None:
    decisions = walk(Policy(recover_runs=2), [MET, GOOD, GOOD, GOOD])
    assert states(decisions) == [FIRING, RECOVERING, OK, OK]
    assert told(decisions) == ["firing", None, "recovered", None]
    assert decisions[1].reason == "condition cleared 1 of the 2 runs in a row it needs"
    assert decisions[2].after.firing_since is None and not decisions[2].after.firing_notified


def test_met_again_while_recovering_is_firing_again_without_a_second_firing_notice() -> None:
    decisions = walk(Policy(recover_runs=3), [MET, GOOD, GOOD, MET, GOOD])
    assert states(decisions) == [FIRING, RECOVERING, RECOVERING, FIRING, RECOVERING]
    assert told(decisions) == ["firing", None, None, None, None]
    assert decisions[4].after.good_streak == 1  # the streak started again


# -- no data and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "state", "flag"),
    [(EMPTY, NO_DATA, "notify_on_no_data"), (FAILED, ERROR, "notify_on_error")],
)
def test_no_data_and_error_are_states_told_on_entering_when_configured(
    seen: Observation, state: AlertState, flag: str
) -> None:
    on = walk(Policy(**{flag: True}), [seen, seen, GOOD])  # type: ignore[arg-type]
    assert states(on) == [state, state, OK]
    assert told(on) == [state.value, None, None]
    assert on[1].reason == f"still {state}: told only on entering it"
    off = walk(Policy(**{flag: False}), [seen])  # type: ignore[arg-type]
    assert told(off) == [None] and off[0].reason == f"not configured to notify on {state}"


def test_a_gap_breaks_a_pending_streak() -> None:
    assert states(walk(Policy(for_runs=2), [MET, EMPTY, MET, FAILED, MET, MET])) == [
        PENDING,
        NO_DATA,
        PENDING,
        ERROR,
        PENDING,
        FIRING,
    ]


def test_an_incident_stays_open_through_no_data_and_errors() -> None:
    decisions = walk(Policy(notify_on_error=False), [MET, EMPTY, MET, FAILED, GOOD])
    assert states(decisions) == [FIRING, NO_DATA, FIRING, ERROR, OK]
    assert told(decisions) == ["firing", None, None, None, "recovered"]
    assert decisions[3].after.firing_since == at(1)


# -- repeats while firing ---------------------------------------------------------------------


def test_a_run_repeats_the_notice_once_renotify_after_has_passed() -> None:
    policy = Policy(renotify_after=dt.timedelta(hours=1))
    decisions = walk(policy, [MET, MET, MET, MET], every_min=25)  # at 25, 50, 75, 100 min
    assert told(decisions) == ["firing", None, None, "renotify"]
    assert decisions[1].reason.endswith("repeats from 2030-01-01 09:25:00 UTC")
    assert decisions[3].after.last_notified_at == at(100)


def test_a_reminder_between_runs_is_due_after_renotify_after() -> None:
    policy = Policy(renotify_after=dt.timedelta(hours=1))
    firing = walk(policy, [MET])[0].after
    assert reminder(firing, policy, at(30)) is None
    due = reminder(firing, policy, at(61))
    assert due is not None and due.notify and due.kind == "renotify"
    assert due.after.last_notified_at == at(61) and due.after.state == FIRING
    assert reminder(firing, Policy(), at(600)) is None  # no repeat configured
    muted = Policy(renotify_after=dt.timedelta(hours=1), muted_until=at(120))
    assert reminder(firing, muted, at(61)) is None
    assert reminder(walk(policy, [GOOD])[0].after, policy, at(600)) is None


# -- muting -------------------------------------------------------------------------------------


def test_muting_holds_notices_back_but_not_states_and_tells_the_firing_after() -> None:
    policy = Policy(muted_until=at(2.5))
    decisions = walk(policy, [MET, MET, MET])
    assert states(decisions) == [FIRING, FIRING, FIRING]
    assert told(decisions) == [None, None, "firing"]
    assert decisions[0].muted and decisions[0].kind == "firing"
    assert decisions[0].reason == "started firing; muted until 2030-01-01 08:02:30 UTC"
    assert decisions[1].reason.startswith("firing, not told yet (it was muted)")
    assert decisions[0].after.last_notified_at is None


def test_a_recovery_whose_firing_was_never_told_is_not_told_either() -> None:
    decisions = walk(Policy(muted_until=at(1.5)), [MET, GOOD])
    assert told(decisions) == [None, None] and states(decisions) == [FIRING, OK]
    assert decisions[1].reason.startswith("recovered; its firing was never told (muted)")


def test_a_skipped_run_moves_nothing() -> None:
    start = fresh(T0)
    decision = step(
        start, Observation(Outcome.SKIPPED, detail="an earlier period"), Policy(), at(1)
    )
    assert decision.after == start and decision.kind is None
    assert decision.reason == "not evaluated: an earlier period"


# -- conditions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "met"),
    [
        (">", 10, False),
        (">", 9.5, True),
        (">=", 10, True),
        ("<", 10, False),
        ("<", 10.5, True),
        ("<=", 10, True),
        ("==", 10, True),
        ("==", 10.1, False),
        ("!=", 10, False),
        ("!=", 3, True),
    ],
)
def test_threshold_operators(op: str, value: float, met: bool) -> None:
    seen = observe(Condition(ConditionKind.THRESHOLD, op, value), 10.0)
    assert seen.met is met and seen.value == 10.0
    assert seen.detail == f"value 10 {op if met else f'not {op}'} {value:g}"


def test_no_value_is_no_data_never_zero() -> None:
    for condition in (
        Condition(ConditionKind.THRESHOLD, "<", 1),
        Condition(ConditionKind.OFF_TARGET),
        Condition(ConditionKind.CHANGE, "<", -10),
    ):
        seen = observe(condition, None, rag=RAG.NO_DATA, target=100, base=50)
        assert seen.outcome == Outcome.NO_DATA and seen.met is None and seen.value is None


def test_off_target_is_red_and_amber_only_when_asked() -> None:
    red, amber = (
        Condition(ConditionKind.OFF_TARGET),
        Condition(ConditionKind.OFF_TARGET, include_amber=True),
    )
    assert observe(red, 50, rag=RAG.RED, target=100).met is True
    assert observe(red, 95, rag=RAG.AMBER, target=100).met is False
    assert observe(amber, 95, rag=RAG.AMBER, target=100).met is True
    assert observe(amber, 120, rag=RAG.GREEN, target=100).met is False
    assert observe(red, 50, rag=RAG.RED, target=100).detail == "red against the target 100"
    no_target = observe(red, 50, rag=None, target=None)
    assert no_target.outcome == Outcome.ERROR and "no target" in no_target.detail


def test_change_against_the_previous_value() -> None:
    drop = Condition(ConditionKind.CHANGE, "<", -10)
    seen = observe(drop, 85, base=100)
    assert seen.met is True and seen.change_pct == pytest.approx(-15)
    assert observe(drop, 95, base=100).met is False
    assert observe(drop, -120, base=-100).change_pct == pytest.approx(-20)  # against |base|
    zero = observe(drop, 50, base=0)
    assert zero.outcome == Outcome.NO_DATA and zero.change_pct is None
    assert zero.detail == "the previous value is 0"
    assert observe(drop, 50, base=None).detail == "no previous value to compare"


def test_conditions_in_words_and_the_worst_state_first() -> None:
    assert Condition(ConditionKind.THRESHOLD, ">=", 1500).describe("EUR") == "value >= 1,500 EUR"
    assert Condition(ConditionKind.CHANGE, "<", -10).describe() == "change < -10 %"
    assert Condition(ConditionKind.OFF_TARGET, include_amber=True).describe() == (
        "off target (red or amber)"
    )
    assert WORST_FIRST[0] == FIRING and WORST_FIRST[-1] == OK
    assert max([OK, NO_DATA, PENDING], key=lambda s: s.severity) == NO_DATA
