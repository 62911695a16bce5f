"""Alert rules evaluated against real runs on SQLite and PostgreSQL stores.

The source is a SQLite file whose numbers each test changes between runs (``Source``);
"now" for states, mutes and repeats is the rule clock the test sets
(``store.alert_watch.clock``), so no test sleeps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from access_world import auth_settings

from kpi_store import KPIStore, NotFoundError, ValidationError, Worker
from kpi_store.alert_records import AlertEvaluation, AlertRule

SPIN = "SELECT 1 UNION ALL SELECT x + 1 FROM spin WHERE x < (SELECT max(turns) FROM knobs)"
METRIC_SQL = (
    f"WITH RECURSIVE spin(x) AS ({SPIN})\n"
    "SELECT region, v FROM metric WHERE region = :region AND (SELECT count(*) FROM spin) > 0"
)
MONTHLY_SQL = "SELECT v FROM monthly WHERE month >= :start AND month <= :end"
FOREVER = 10_000_000_000


class Source:
    """A SQLite source whose numbers the test sets: ``metric`` (one value per region),
    ``knobs`` (how long a query spins), ``monthly`` (one value per month)."""

    def __init__(self, path: Path):
        self.path = path
        self.sql(
            "CREATE TABLE metric (region TEXT, v REAL)",
            "INSERT INTO metric VALUES ('north', 120), ('south', 120)",
            "CREATE TABLE knobs (turns INTEGER)",
            "INSERT INTO knobs VALUES (1)",
            "CREATE TABLE monthly (month TEXT, v REAL)",
        )

    def sql(self, *statements: str, params: tuple[Any, ...] = ()) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as connection, connection:
            for statement in statements:
                connection.execute(statement, params if statement is statements[-1] else ())

    def set(self, value: float | None, region: str = "north") -> None:
        self.sql("UPDATE metric SET v = ? WHERE region = ?", params=(value, region))

    def month(self, month: str, value: float) -> None:
        self.sql("INSERT INTO monthly VALUES (?, ?)", params=(month, value))


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2030, 1, 1, 8, 0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture()
def source(tmp_path: Path) -> Source:
    return Source(tmp_path / "metrics.db")


@pytest.fixture()
def clock(store: KPIStore) -> Clock:
    ticking = Clock()
    store.alert_watch.clock = ticking
    return ticking


@pytest.fixture()
def kpi(store: KPIStore, source: Source, clock: Clock) -> int:
    """Sales per region (target 100, higher is better, 10 % tolerance), north by default."""
    store.add_data_source("metrics", f"sqlite:///{source.path}", "setup")
    region = {"name": "region", "type": "str", "default": "north", "choices": ["north", "south"]}
    spec = {
        "name": "Sales",
        "data_source": "metrics",
        "sql": METRIC_SQL,
        "parameters": [region],
        "value_column": "v",
        "target": 100.0,
        "unit": "EUR",
    }
    return store.create_kpi(spec, "setup").id


def run(store: KPIStore, kpi: int, **params: Any) -> int:
    return store.execute(kpi, params or None, actor="tester").id


def runs(store: KPIStore, kpi: int, source: Source, values: list[float | None]) -> list[int]:
    done = []
    for value in values:
        source.set(value)
        done.append(run(store, kpi))
    return done


def log(store: KPIStore, rule: AlertRule) -> list[AlertEvaluation]:
    """The rule's evaluations, oldest first."""
    return list(reversed(store.rule_evaluations(rule.id, limit=1000)))


def below(store: KPIStore, kpi: int, value: float = 50, **fields: Any) -> AlertRule:
    return store.create_rule(
        kpi, "editor", name="Sales low", condition="threshold", op="<", value=value, **fields
    )


def inbox_kinds(store: KPIStore, person: str) -> list[str]:
    return [item.event.kind for item in reversed(store.inbox(actor=person))]


# -- the whole life of a rule ---------------------------------------------------------------------


def test_pending_firing_recovering_ok_with_the_inbox_told_twice(
    store: KPIStore, kpi: int, source: Source
) -> None:
    rule = below(store, kpi, for_runs=2, recover_runs=2)
    store.subscribe(rule.id, "ana")
    ids = runs(store, kpi, source, [80, 20, 20, 20, 80, 80])
    seen = log(store, rule)
    assert [e.run_id for e in seen] == ids
    assert [(e.state_before, e.state_after) for e in seen] == [
        ("ok", "ok"),
        ("ok", "pending"),
        ("pending", "firing"),
        ("firing", "firing"),
        ("firing", "recovering"),
        ("recovering", "ok"),
    ]
    assert [e.notification for e in seen if e.notified] == ["firing", "recovered"]
    assert [e.condition_met for e in seen] == [False, True, True, True, False, False]
    assert seen[2].recipients == 1 and seen[2].value == 20 and seen[2].detail == "value 20 < 50"
    assert inbox_kinds(store, "ana") == ["firing", "recovered"]
    [firing] = [i for i in store.inbox(actor="ana") if i.event.kind == "firing"]
    assert firing.event.run_id == ids[2] and firing.event.kpi_name == "Sales"
    assert firing.event.summary.startswith("Sales: 'Sales low' is firing (value < 50 EUR)")
    assert (
        store.rule(rule.id).state == "ok" and store.rule(rule.id).last_evaluated_run_id == ids[-1]
    )


@pytest.mark.parametrize("empty", ["zero rows", "a NULL value"])
def test_no_rows_or_a_null_value_is_no_data_never_zero_never_off_target(
    store: KPIStore, kpi: int, source: Source, empty: str
) -> None:
    off_target = store.create_rule(kpi, "editor", name="Off target", condition="off_target")
    zero_or_less = below(store, kpi, value=1)  # 0 would be below 1: it must not fire
    if empty == "zero rows":
        source.sql("DELETE FROM metric WHERE region = 'north'")
    else:
        source.set(None)
    execution = store.execution(run(store, kpi))
    assert execution.status == "success" and execution.value is None
    for rule in (off_target, zero_or_less):
        [seen] = log(store, rule)
        assert (seen.outcome, seen.state_after, seen.condition_met) == ("no_data", "no_data", None)
        assert seen.value is None and not seen.notified
        assert seen.reason == "not configured to notify on no_data"


def test_no_data_is_told_when_configured(store: KPIStore, kpi: int, source: Source) -> None:
    rule = below(store, kpi, notify_on_no_data=True)
    store.subscribe(rule.id, "ana")
    runs(store, kpi, source, [None, None, 80])
    assert [e.state_after for e in log(store, rule)] == ["no_data", "no_data", "ok"]
    assert inbox_kinds(store, "ana") == ["no_data"]


def test_a_failing_query_and_a_timeout_are_errors_a_cancelled_run_is_not_evaluated(
    store: KPIStore, kpi: int, source: Source
) -> None:
    rule = below(store, kpi)
    store.subscribe(rule.id, "ana")
    source.sql("ALTER TABLE metric RENAME TO gone")
    failed = store.execution(run(store, kpi))
    source.sql("ALTER TABLE gone RENAME TO metric", f"UPDATE knobs SET turns = {FOREVER}")
    timed_out = store.execute(kpi, actor="tester", timeout_s=0.3)
    assert (failed.status, timed_out.status) == ("failed", "timeout")
    queued = store.submit(kpi, actor="tester")
    store.cancel(queued.id, "tester")
    first, second = log(store, rule)
    assert (first.outcome, first.state_after, first.notification) == ("error", "error", "error")
    assert first.notified and "no such table" in first.detail
    assert (second.outcome, second.run_id, second.notified) == ("error", timed_out.id, False)
    assert second.detail.startswith("the run timeout") and "still error" in second.reason
    assert inbox_kinds(store, "ana") == ["error"]
    assert store.rule(rule.id).last_evaluated_run_id == timed_out.id  # not the cancelled one


# -- repeats and muting -------------------------------------------------------------------------


def test_a_repeat_after_renotify_after_on_a_run_and_between_runs(
    store: KPIStore, kpi: int, source: Source, clock: Clock
) -> None:
    rule = below(store, kpi, renotify_after_s=3600)
    store.subscribe(rule.id, "ana")
    runs(store, kpi, source, [20])
    clock.advance(minutes=30)
    runs(store, kpi, source, [20])
    clock.advance(minutes=31)
    runs(store, kpi, source, [20])
    assert store.alert_watch.catch_up() == 0  # the run just told it: nothing due
    clock.advance(minutes=61)
    assert store.alert_watch.catch_up() == 1  # no run came: a reminder
    assert store.alert_watch.catch_up() == 0
    seen = log(store, rule)
    assert [e.notification if e.notified else None for e in seen] == [
        "firing",
        None,
        "renotify",
        "renotify",
    ]
    assert seen[1].reason == (
        "still firing: already notified at 2030-01-01 08:00:00 UTC; "
        "repeats from 2030-01-01 09:00:00 UTC"
    )
    assert (
        seen[3].run_id is None
        and seen[3].detail == f"no new run since run {seen[2].run_id}; still firing"
    )
    assert inbox_kinds(store, "ana") == ["firing", "renotify", "renotify"]


def test_muting_holds_notices_back_and_the_log_says_so(
    store: KPIStore, kpi: int, source: Source, clock: Clock
) -> None:
    rule = below(store, kpi)
    store.subscribe(rule.id, "ana")
    muted = store.mute_rule(rule.id, clock.now + dt.timedelta(hours=1), "editor")
    assert muted.muted_until == clock.now + dt.timedelta(hours=1)
    runs(store, kpi, source, [20])
    clock.advance(hours=2)
    runs(store, kpi, source, [20])
    first, second = log(store, rule)
    assert (first.state_after, first.notification, first.notified) == ("firing", "firing", False)
    assert first.reason == "started firing; muted until 2030-01-01 09:00:00 UTC"
    assert second.notified and second.reason == "firing, not told yet (it was muted)"
    assert inbox_kinds(store, "ana") == ["firing"]
    assert store.mute_rule(rule.id, None, "editor").muted_until is None
    [entry, *_] = store.audit_log(action="RULE_UPDATE")
    assert entry.details["changes"]["muted_until"]["after"] is None


def test_the_log_answers_why_not_notified(store: KPIStore, kpi: int, source: Source) -> None:
    rule = below(store, kpi, for_runs=2)
    runs(store, kpi, source, [20, 20])
    pending, firing = log(store, rule)
    assert pending.reason == "condition met 1 of the 2 runs in a row it needs to fire"
    assert not firing.notified and firing.notification == "firing"
    assert firing.reason == "started firing; nobody to tell (no subscriber, no webhook)"


# -- conditions ---------------------------------------------------------------------------------


def test_a_percent_change_against_the_previous_run(
    store: KPIStore, kpi: int, source: Source
) -> None:
    runs(store, kpi, source, [100])  # before the rule: its base, not evaluated
    rule = store.create_rule(kpi, "editor", name="Drop", condition="change", op="<", value=-10)
    runs(store, kpi, source, [85, 85, 0, 50])
    seen = log(store, rule)
    assert [e.outcome for e in seen] == ["met", "not_met", "met", "no_data"]
    assert seen[0].change_pct == pytest.approx(-15) and seen[0].state_after == "firing"
    assert seen[1].change_pct == pytest.approx(0) and seen[1].state_after == "ok"
    assert seen[3].change_pct is None and seen[3].detail == "the previous value is 0"


def test_a_percent_change_on_a_period_kpi_compares_with_the_previous_period(
    store: KPIStore, source: Source, clock: Clock
) -> None:
    store.add_data_source("metrics", f"sqlite:///{source.path}", "setup")
    dates = [{"name": n, "type": "date"} for n in ("start", "end")]
    spec = {"name": "Monthly", "data_source": "metrics", "sql": MONTHLY_SQL, "parameters": dates}
    spec |= {"value_column": "v", "period": {"start": "start", "end": "end", "grain": "month"}}
    kpi = store.create_kpi(spec, "setup").id
    for month, value in (("2030-01", 50), ("2030-02", 100), ("2030-03", 85)):
        source.month(f"{month}-15", value)
    rule = store.create_rule(kpi, "editor", name="Drop", condition="change", op="<", value=-10)

    def month(m: int) -> int:
        last = {1: 31, 2: 28, 3: 31}[m]
        return run(store, kpi, start=f"2030-{m:02}-01", end=f"2030-{m:02}-{last}")

    february, january, march = month(2), month(1), month(3)
    no_base, backfill, drop = log(store, rule)
    assert (no_base.run_id, no_base.outcome) == (february, "no_data")
    assert no_base.detail == "no previous value to compare"
    assert (backfill.run_id, backfill.outcome, backfill.state_after) == (
        january,
        "skipped",
        "no_data",
    )
    assert "earlier than one already seen" in backfill.detail
    # March against February (100), the previous period, not January (the newer run: 50).
    assert (drop.run_id, drop.outcome) == (march, "met")
    assert drop.change_pct == pytest.approx(-15)


def test_off_target_follows_the_kpi_target_and_tolerance(
    store: KPIStore, kpi: int, source: Source
) -> None:
    red = store.create_rule(kpi, "editor", name="Red", condition="off_target")
    amber = store.create_rule(
        kpi, "editor", name="Amber", condition="off_target", include_amber=True
    )
    runs(store, kpi, source, [95, 80])
    assert [e.outcome for e in log(store, red)] == ["not_met", "met"]
    assert [e.outcome for e in log(store, amber)] == ["met", "met"]
    assert log(store, red)[1].detail == "red against the target 100"


def test_threshold_operators_on_real_runs(store: KPIStore, kpi: int, source: Source) -> None:
    rules = {
        op: store.create_rule(kpi, "e", name=op, condition="threshold", op=op, value=120)
        for op in (">", ">=", "<", "<=", "==", "!=")
    }
    runs(store, kpi, source, [120])
    met = {op: log(store, rule)[0].condition_met for op, rule in rules.items()}
    assert met == {">": False, ">=": True, "<": False, "<=": True, "==": True, "!=": False}


# -- which series ------------------------------------------------------------------------------


def test_who_is_subscribed_ignores_the_case_of_an_email(store: KPIStore, kpi: int) -> None:
    rule = store.subscribe(below(store, kpi).id, "Ana@Example.com")
    assert rule.subscribed("ana@example.com") and rule.subscribed("ANA@example.COM")
    assert not rule.subscribed("bo@example.com") and not rule.subscribed("")


def test_official_and_named_parameter_sets_watch_their_own_runs(
    store: KPIStore, kpi: int, source: Source
) -> None:
    official = below(store, kpi)
    south = below(store, kpi, params={"region": "south"})
    assert official.official and south.params == {"region": "south"} and south.series_key
    source.set(20, "south")
    south_run = run(store, kpi, region="south")
    assert log(store, official) == []  # another parameter set does not move the official rule
    assert [e.run_id for e in log(store, south)] == [south_run]
    north_run = run(store, kpi, region="north")
    assert [e.run_id for e in log(store, official)] == [north_run]
    assert [e.run_id for e in log(store, south)] == [south_run]
    assert (store.rule(official.id).state, store.rule(south.id).state) == ("ok", "firing")
    assert store.alert_states()[kpi].state == "firing"
    assert store.alert_states([kpi + 1]) == {}


# -- resets ------------------------------------------------------------------------------------


def test_editing_the_sql_or_the_rule_resets_it_with_the_reason_audited(
    store: KPIStore, kpi: int, source: Source
) -> None:
    rule = below(store, kpi)
    runs(store, kpi, source, [20])
    assert store.rule(rule.id).state == "firing"
    store.update_kpi(kpi, {"description": "no SQL change"}, "editor", expected_version=1)
    assert store.rule(rule.id).state == "firing" and store.audit_log(action="RULE_RESET") == []
    store.update_kpi(kpi, {"sql": METRIC_SQL + " AND v > -1"}, "editor", expected_version=2)
    assert store.rule(rule.id).state == "ok"
    [reset] = store.audit_log(action="RULE_RESET")
    assert (
        reset.actor == "editor" and reset.details["reason"] == "the KPI's SQL changed (version 3)"
    )
    assert reset.details["before"]["state"] == "firing"
    runs(store, kpi, source, [20])
    store.restore_version(kpi, 1, "editor")
    newest = store.audit_log(action="RULE_RESET", limit=1)[0]
    assert newest.details["reason"] == "Restored version 1, with other SQL (now version 4)"
    runs(store, kpi, source, [20])
    store.update_rule(rule.id, {"value": 10}, "editor")
    edited = store.audit_log(action="RULE_RESET", limit=1)[0]
    assert edited.details["reason"] == "the rule was edited (value)"
    assert store.rule(rule.id).state == "ok"
    store.update_rule(rule.id, {"name": "Renamed"}, "editor")
    assert len(store.audit_log(action="RULE_RESET")) == 3  # a new name changes no state


def test_pinning_another_official_parameter_set_resets_the_official_rules(
    store: KPIStore, kpi: int, source: Source
) -> None:
    official = below(store, kpi)
    south = below(store, kpi, params={"region": "south"})
    source.set(20, "south")
    run(store, kpi, region="south")
    runs(store, kpi, source, [20])
    assert (store.rule(official.id).state, store.rule(south.id).state) == ("firing", "firing")
    store.update_kpi(kpi, {"official_params": {"region": "south"}}, "editor", expected_version=1)
    assert store.rule(official.id).state == "ok"  # its state was about the north series
    assert store.rule(south.id).state == "firing"  # a named set is not moved
    [reset] = store.audit_log(action="RULE_RESET")
    assert reset.details["reason"] == "the KPI's official parameter set changed (version 2)"
    store.update_kpi(kpi, {"description": "same official set"}, "editor", expected_version=2)
    assert len(store.audit_log(action="RULE_RESET")) == 1


def test_a_run_of_the_old_sql_finishing_after_an_edit_does_not_move_the_rule(
    store: KPIStore, kpi: int, source: Source
) -> None:
    rule = below(store, kpi)
    queued = store.submit(kpi, actor="tester").id  # version 1's SQL
    store.update_kpi(kpi, {"sql": METRIC_SQL + " AND v > -1"}, "editor", expected_version=1)
    source.set(20)
    assert store.queue.claim("test-worker") == queued
    store.queue.run(queued, "test-worker")
    [seen] = log(store, rule)
    assert (seen.outcome, seen.state_after) == ("skipped", "ok")
    assert seen.detail == "it ran version 1 of the KPI, whose SQL has changed since"


# -- once and only once ------------------------------------------------------------------------


def test_a_lost_evaluation_is_caught_up_by_the_worker(
    store: KPIStore, kpi: int, source: Source, clock: Clock
) -> None:
    rule = below(store, kpi)

    def broken() -> dt.datetime:
        raise RuntimeError("the process died before it evaluated the run")

    store.alert_watch.clock = broken  # the hook fails: the run is recorded, not evaluated
    [lost] = runs(store, kpi, source, [20])
    assert log(store, rule) == [] and store.execution(lost).status == "success"
    store.alert_watch.clock = clock
    worker = Worker(store, concurrency=1, poll_interval_s=0.05, recovery_interval_s=0.05).start()
    try:
        assert wait_for(lambda: log(store, rule))
    finally:
        worker.stop()
    [seen] = log(store, rule)
    assert (seen.run_id, seen.state_after) == (lost, "firing")


def test_two_evaluations_of_one_run_log_one_row(store: KPIStore, kpi: int, source: Source) -> None:
    rule = below(store, kpi)
    [done] = runs(store, kpi, source, [20])
    assert store.alert_watch.evaluate_run(done) == []
    assert store.alert_watch.catch_up() == 0
    original = store.alert_watch.clock
    store.alert_watch.clock = _raises  # the next run's hook fails
    [lost] = runs(store, kpi, source, [20])
    store.alert_watch.clock = original
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.alert_watch.evaluate(rule.id, lost)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r is not None for r in results) == 1
    assert [e.run_id for e in log(store, rule)] == [done, lost]


def test_a_run_finishing_after_a_newer_one_leaves_a_trace(
    store: KPIStore, kpi: int, source: Source
) -> None:
    rule = below(store, kpi)
    older = store.submit(kpi, actor="tester").id
    [newer] = runs(store, kpi, source, [20])
    assert store.queue.claim("test-worker") == older
    store.queue.run(older, "test-worker")
    evaluated, skipped = log(store, rule)
    assert evaluated.run_id == newer and skipped.run_id == older
    assert (skipped.outcome, skipped.state_before, skipped.state_after) == (
        "skipped",
        "firing",
        "firing",
    )
    assert (
        skipped.detail == f"the rule had already seen a newer run ({newer}) when this one finished"
    )
    assert store.alert_watch.evaluate_run(older) == []  # and only once


def _raises() -> dt.datetime:
    raise RuntimeError("evaluation lost")


def wait_for(condition: Any, timeout_s: float = 20.0) -> Any:
    stop = threading.Event()
    deadline = dt.datetime.now() + dt.timedelta(seconds=timeout_s)
    while dt.datetime.now() < deadline:
        found = condition()
        if found:
            return found
        stop.wait(0.05)
    return condition()


# -- testing a rule, subscriptions, validation ---------------------------------------------


def test_testing_a_rule_changes_nothing(store: KPIStore, kpi: int, source: Source) -> None:
    rule = below(store, kpi)
    empty = store.test_rule(rule.id)
    assert empty.run_id is None and empty.outcome == "skipped" and empty.would_notify is None
    store.alert_watch.clock = _raises  # the run is not evaluated
    [done] = runs(store, kpi, source, [20])
    store.alert_watch.clock = Clock()
    tried = store.test_rule(rule.id)
    assert (tried.run_id, tried.outcome, tried.value) == (done, "met", 20)
    assert (tried.state_before, tried.state_after, tried.would_notify) == ("ok", "firing", "firing")
    assert store.rule(rule.id).state == "ok" and log(store, rule) == []


def test_subscriptions_are_audited_and_listed(store: KPIStore, kpi: int) -> None:
    rule = below(store, kpi)
    assert store.subscribe(rule.id, "ana").subscribers == ("ana",)
    assert store.subscribe(rule.id, "ana").subscribers == ("ana",)  # twice: once
    store.subscribe(rule.id, "bo")
    [mine] = store.subscriptions(actor="ana")
    assert (mine.rule_id, mine.rule_name, mine.kpi_id, mine.state) == (
        rule.id,
        "Sales low",
        kpi,
        "ok",
    )
    assert store.unsubscribe(rule.id, "ana").subscribers == ("bo",)
    assert store.subscriptions(actor="ana") == []
    actions = [(e.action, e.actor) for e in store.audit_log(kpi_id=kpi) if "SUBSCRIBE" in e.action]
    assert actions == [("UNSUBSCRIBE", "ana"), ("SUBSCRIBE", "bo"), ("SUBSCRIBE", "ana")]


def test_with_sign_in_on_only_active_people_are_told(
    store_url: str, source: Source, tmp_path: Path
) -> None:
    boss = "boss@example.com"
    with KPIStore(store_url, settings=auth_settings(store_url)) as signed:
        signed.alert_watch.clock = Clock()
        signed.add_data_source("metrics", f"sqlite:///{source.path}", boss)
        for who in ("ana", "bo"):
            signed.add_person(f"{who}@example.com", boss, role="viewer")
        spec = {"name": "Sales", "data_source": "metrics", "sql": METRIC_SQL, "value_column": "v"}
        region = {"name": "region", "type": "str", "default": "north"}
        kpi = signed.create_kpi({**spec, "parameters": [region]}, boss).id
        rule = signed.create_rule(kpi, boss, name="Low", condition="threshold", op="<", value=50)
        signed.subscribe(rule.id, "Ana@Example.com")
        signed.subscribe(rule.id, "bo@example.com")
        signed.update_person("bo@example.com", boss, active=False)
        source.set(20)
        signed.execute(kpi, actor=boss)
        [seen] = list(signed.rule_evaluations(rule.id, actor=boss))
        assert seen.notified and seen.recipients == 1
        assert [i.event.kind for i in signed.inbox(actor="ana@example.com")] == ["firing"]
        assert signed.rule(rule.id, actor=boss).subscribers == ("ana@example.com", "bo@example.com")


def test_bad_rules_are_refused_naming_the_field(store: KPIStore, kpi: int) -> None:
    refused = {
        "op": dict(condition="threshold", op="=>", value=1),
        "value": dict(condition="threshold", op="<", value=float("nan")),
        "condition": dict(condition="sometimes"),
        "for_runs": dict(condition="threshold", op="<", value=1, for_runs=0),
        "renotify_after_s": dict(condition="threshold", op="<", value=1, renotify_after_s=-5),
        "include_amber": dict(condition="threshold", op="<", value=1, include_amber=True),
        "webhooks": dict(condition="threshold", op="<", value=1, webhooks=["nowhere"]),
    }
    for field, fields in refused.items():
        with pytest.raises(ValidationError) as error:
            store.create_rule(kpi, "editor", name="Bad", **fields)
        assert field in error.value.field_errors, (field, str(error.value))
    with pytest.raises(ValidationError, match="Unknown parameter"):
        below(store, kpi, params={"country": "fr"})
    with pytest.raises(ValidationError, match="name"):
        store.create_rule(kpi, "editor", name=" ", condition="off_target")
    untargeted = store.create_kpi(
        {"name": "No target", "data_source": "metrics", "sql": "SELECT v FROM metric"}, "setup"
    )
    with pytest.raises(ValidationError, match="has no target"):
        store.create_rule(untargeted.id, "editor", name="Off", condition="off_target")
    rule = below(store, kpi)
    with pytest.raises(ValidationError, match="Unknown rule field"):
        store.update_rule(rule.id, {"colour": "red"}, "editor")
    with pytest.raises(NotFoundError):
        store.rule(rule.id + 100)
    assert [e.action for e in store.audit_log(limit=1)] == ["RULE_CREATE"]


def test_a_kpi_without_an_official_set_needs_a_named_one(store: KPIStore, kpi: int) -> None:
    spec = {"name": "Open", "data_source": "metrics", "sql": METRIC_SQL, "value_column": "v"}
    open_kpi = store.create_kpi({**spec, "parameters": [{"name": "region"}]}, "setup").id
    with pytest.raises(ValidationError, match="no official parameter set"):
        below(store, open_kpi)
    assert below(store, open_kpi, params={"region": "north"}).series_key


def test_deleting_a_rule_or_its_kpi(store: KPIStore, kpi: int, source: Source) -> None:
    rule = below(store, kpi)
    store.subscribe(rule.id, "ana")
    runs(store, kpi, source, [20])
    store.delete_rule(rule.id, "editor")
    assert store.rules(kpi) == [] and store.subscriptions(actor="ana") == []
    [deleted] = store.audit_log(action="RULE_DELETE")
    assert deleted.details["rule"]["value"] == 50
    again = below(store, kpi)
    store.delete_kpi(kpi, "admin")
    assert store.rules() == []
    with pytest.raises(NotFoundError):
        store.rule(again.id)


def test_switching_a_rule_off_and_on_and_to_another_condition(
    store: KPIStore, kpi: int, source: Source
) -> None:
    rule = below(store, kpi)
    runs(store, kpi, source, [20])
    store.update_rule(rule.id, {"active": False}, "editor")
    runs(store, kpi, source, [20])
    assert len(log(store, rule)) == 1 and store.alert_watch.catch_up() == 0  # off: not evaluated
    again = store.update_rule(rule.id, {"active": True}, "editor")
    assert again.state == "ok" and store.alert_watch.catch_up() == 0  # no backlog replayed
    reasons = [e.details["reason"] for e in store.audit_log(action="RULE_RESET")]
    assert reasons == ["the rule was switched on again"]
    switched = store.update_rule(rule.id, {"condition": "off_target"}, "editor")
    assert (switched.condition, switched.op, switched.value) == ("off_target", None, None)
    [update, *_] = store.audit_log(action="RULE_UPDATE")
    assert update.details["changes"]["value"] == {"before": 50, "after": None}


def test_a_rule_calls_its_webhooks(store: KPIStore, kpi: int, source: Source) -> None:
    store.add_webhook("ops", "http://127.0.0.1:9/hook", "admin")
    rule = below(store, kpi, webhooks=["ops", "ops"])
    assert rule.webhooks == ("ops",)
    runs(store, kpi, source, [20])
    [seen] = log(store, rule)
    assert seen.notified and seen.recipients == 1
    calls = [d for d in store.deliveries() if d.channel == "webhook"]
    assert [(d.target, d.status) for d in calls] == [("ops", "pending")]
