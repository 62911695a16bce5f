"""Schedules, on SQLite and PostgreSQL: checked input, time driven through
``run_due_schedules(now)`` (due ticks, repeats, downtime, runs still going, pauses,
failures), daylight-saving days in Europe/Berlin, the audit trail, people and scopes with
sign-in on, and the ``schedules`` command.

Fire times are what ``kpi_store/schedules.py`` documents: wall time in the schedule's zone;
a wall time skipped in spring fires moved forward by the gap (02:30 -> 03:30 CEST), one
repeated in autumn fires once, at its first pass, unless the schedule repeats within the
hour (then in both passes).
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from access_world import BOSS, auth_settings
from conftest import make_spec

from kpi_store import KPIStore, PermissionDeniedError, Role, ValidationError, db
from kpi_store.cli import main
from kpi_store.queue import new_holder
from kpi_store.schedules import Tick, describe, fire_times, next_after
from kpi_store.schema import kpi_schedules

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def due_at(store: KPIStore, schedule_id: int, when: dt.datetime) -> None:
    """Data set-up: the schedule's next tick at ``when`` (naive UTC), say on a past day."""
    with db.write_tx(store.engine) as connection:
        connection.execute(
            kpi_schedules.update().where(kpi_schedules.c.id == schedule_id).values(next_run_at=when)
        )


def drain(store: KPIStore) -> None:
    """Run every queued run to its end in this process (what a worker would do)."""
    while True:
        holder = new_holder("test")
        run_id = store.queue.claim(holder)
        if run_id is None:
            return
        store.queue.run(run_id, holder)


def drive(store: KPIStore, start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> list[Tick]:
    """Every tick decided while the clock moves from ``start`` to ``end`` by ``step``,
    the queued runs run at each step."""
    decided, now = [], start
    while now <= end:
        decided += store.run_due_schedules(now)
        drain(store)
        now += step
    return decided


def local(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=UTC).astimezone(BERLIN)


# -- input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("every day", "has 2 field(s)"),
        ("every day at 9 am", "minute field 'every' is not valid"),
        ("0 25 * * *", "hour field '25' is not valid (hours: 0-23"),
        ("0 9 * * * 61", "second field '61' is not valid"),
        ("0 9 31 2 *", "never fires"),
        ("0 9 * *", "has 4 field(s)"),
        ("@reboot", "one of @annually"),
        ("", "Give a cron expression"),
    ],
)
def test_a_bad_cron_expression_is_refused_by_name(store: KPIStore, cron: str, words: str) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    with pytest.raises(ValidationError) as refused:
        store.create_schedule(kpi.id, cron, "alice")
    assert words in str(refused.value) and "cron" in refused.value.field_errors
    assert store.schedules() == []


def test_the_preview_of_an_unsaved_expression(store: KPIStore) -> None:
    found = store.preview_schedule("  30   2 * * * ", "Europe/Berlin", 5)
    assert (found.cron, found.timezone) == ("30 2 * * *", "Europe/Berlin")
    assert found.description == "At 02:30 (Europe/Berlin)"
    assert found.fire_times == fire_times("30 2 * * *", "Europe/Berlin", None, 5)
    assert all((t.hour, t.minute) == (2, 30) for t in found.fire_times)
    with pytest.raises(ValidationError, match="hour field '25'"):
        store.preview_schedule("0 25 * * *")
    with pytest.raises(ValidationError, match="Unknown time zone"):
        store.preview_schedule("0 7 * * *", "Mars/Olympus")


def test_zones_and_parameters_are_checked_like_a_run(store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    for zone in ("Mars/Olympus", "europe/berlin", "../../etc/passwd", ""):
        with pytest.raises(ValidationError, match="Unknown time zone") as refused:
            store.create_schedule(kpi.id, "0 9 * * *", "alice", timezone=zone)
        assert "timezone" in refused.value.field_errors
    with pytest.raises(ValidationError, match="Unknown parameter"):
        store.create_schedule(kpi.id, "0 9 * * *", "alice", params={"colour": "red"})
    with pytest.raises(ValidationError) as refused:
        store.create_schedule(kpi.id, "0 9 * * *", "alice", params={"region": "mars"})
    assert "region" in refused.value.field_errors
    with pytest.raises(ValidationError, match="may also be relative") as refused:
        store.create_schedule(kpi.id, "0 9 * * *", "alice", params={"start": "the other day"})
    assert "start" in refused.value.field_errors
    with pytest.raises(ValidationError, match="true or false"):
        store.create_schedule(kpi.id, "0 9 * * *", "alice", active="yes")  # type: ignore[arg-type]
    store.archive_kpi(kpi.id, "alice")
    with pytest.raises(ValidationError, match="archived"):
        store.create_schedule(kpi.id, "0 9 * * *", "alice")
    assert store.schedules() == []


def test_a_schedule_keeps_relative_dates_as_text_and_shows_its_next_times(
    store: KPIStore,
) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    params = {"start": "Start of  last MONTH", "region": "south"}
    before = db.utcnow()
    made = store.create_schedule(
        kpi.id, " 30  2 * * * ", "alice", timezone="Europe/Berlin", params=params
    )
    assert (made.cron, made.timezone, made.run_as, made.active) == (
        "30 2 * * *",
        "Europe/Berlin",
        "alice",
        True,
    )
    assert made.params == {"start": "start of last month", "region": "south"}
    assert made.description == "At 02:30 (Europe/Berlin)"
    assert made.next_run_at == next_after("30 2 * * *", "Europe/Berlin", before)
    assert made.next_run_at is not None and made.next_run_at > before
    five = made.next_fire_times(5, after=dt.datetime(2026, 3, 27, 12))
    assert [t.strftime("%d %H:%M %Z") for t in five] == [
        "28 02:30 CET",
        "29 03:30 CEST",  # 02:30 does not exist that day: moved forward by the gap
        "30 02:30 CEST",
        "31 02:30 CEST",
        "01 02:30 CEST",
    ]
    assert store.schedule(made.id) == made and store.schedules(kpi.id) == [made]


def test_cron_with_seconds_and_in_words() -> None:
    """croniter's sixth field is seconds (after the weekday); words put them in place."""
    start = dt.datetime(2026, 1, 5, 8, 0)  # a Monday
    every = fire_times("* * * * * *", "UTC", start, 3)
    assert [t.replace(tzinfo=None) for t in every] == [
        start + dt.timedelta(seconds=s) for s in (1, 2, 3)
    ]
    [weekday] = fire_times("0 9 * * 1-5 30", "UTC", start, 1)
    assert weekday.replace(tzinfo=None) == dt.datetime(2026, 1, 5, 9, 0, 30)
    assert describe("* * * * * *") == "Every second"
    assert describe("0 9 * * 1-5 30") == "At 09:00:30, Monday through Friday"
    assert describe("@daily") == "At 00:00"


# -- firing ----------------------------------------------------------------------------------


def test_a_due_tick_queues_exactly_one_run_marked_with_its_schedule(store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "0 9 * * *", "alice", params={"region": "east"})
    due = made.next_run_at
    assert due is not None
    assert store.run_due_schedules(due - dt.timedelta(seconds=1)) == []

    [tick] = store.run_due_schedules(due)
    assert (tick.outcome, tick.due_at, tick.decided_at, tick.missed) == ("fired", due, due, 0)
    run = store.execution(tick.run_id or 0)
    assert (run.schedule_id, run.status, run.mode, run.requested_by) == (
        made.id,
        "pending",
        "background",
        "alice",
    )
    assert run.params == {"start": "2024-01-01", "region": "east"}
    assert store.run_due_schedules(due) == []  # the same moment again: nothing
    after = store.schedule(made.id)
    assert (after.last_run_id, after.last_run_at) == (run.id, due)
    assert after.next_run_at == due + dt.timedelta(days=1)
    assert [r.id for r in store.executions(kpi.id)] == [run.id]
    assert store.schedule_ticks(made.id) == [tick]


def test_after_downtime_a_missed_schedule_fires_once(store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "0 9 * * *", "alice")
    due = made.next_run_at
    assert due is not None
    back = due + dt.timedelta(days=3, hours=2)  # three more 09:00s went by

    [tick] = store.run_due_schedules(back)
    assert (tick.outcome, tick.due_at, tick.missed) == ("fired", due, 3)
    assert tick.reason and tick.reason.startswith("Fired late: 3 later fire times passed")
    assert store.schedule(made.id).next_run_at == due + dt.timedelta(days=4)
    assert len(store.executions(kpi.id)) == 1
    assert store.run_due_schedules(back) == []


def test_a_tick_while_the_last_run_is_still_going_is_skipped(store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "*/10 * * * *", "alice")
    first = made.next_run_at
    assert first is not None
    [fired] = store.run_due_schedules(first)
    ten = dt.timedelta(minutes=10)

    [queued] = store.run_due_schedules(first + ten)
    assert (queued.outcome, queued.run_id) == ("skipped", None)
    assert queued.reason == (
        f"Run {fired.run_id} of this schedule was still pending; nothing was queued, so "
        "the KPI does not run twice at once."
    )
    assert store.queue.claim("test-holder") == fired.run_id  # now it is running
    [running] = store.run_due_schedules(first + 2 * ten)
    assert running.outcome == "skipped" and "still running" in (running.reason or "")
    store.queue.run(fired.run_id or 0, "test-holder")

    [again] = store.run_due_schedules(first + 3 * ten)
    assert again.outcome == "fired" and again.run_id != fired.run_id
    runs = store.executions(kpi.id)
    assert sorted(r.id for r in runs) == sorted([fired.run_id, again.run_id])
    assert [t.outcome for t in store.schedule_ticks(made.id)] == [
        "fired",
        "skipped",
        "skipped",
        "fired",
    ]


def test_a_paused_schedule_fires_nothing_and_resumes_from_now(store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "0 9 * * *", "alice")
    paused = store.pause_schedule(made.id, "bob")
    assert (paused.active, paused.next_run_at, paused.updated_by) == (False, None, "bob")
    assert store.run_due_schedules(dt.datetime(2099, 1, 1)) == []
    assert store.schedule_ticks(made.id) == []
    assert store.pause_schedule(made.id, "bob") == paused  # no change, no entry

    before = db.utcnow()
    resumed = store.resume_schedule(made.id, "carol")
    assert resumed.active and resumed.next_run_at == next_after("0 9 * * *", "UTC", before)
    updates = store.audit_log(action="SCHEDULE_UPDATE")
    assert [(e.actor, e.details["from"]["active"], e.details["to"]["active"]) for e in updates] == [
        ("carol", False, True),
        ("bob", True, False),
    ]
    assert updates[1].details["to"]["next_run_at"] is None


def test_a_run_that_cannot_be_created_is_a_failed_tick_and_the_schedule_stays(
    store: KPIStore,
) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "0 9 * * *", "alice", params={"region": "west"})
    due = made.next_run_at
    assert due is not None
    store.archive_kpi(kpi.id, "alice")
    [archived] = store.run_due_schedules(due)
    assert (archived.outcome, archived.run_id) == ("failed", None)
    assert "archived and cannot run" in (archived.reason or "")
    assert store.schedule(made.id).active and store.schedule(made.id).next_run_at > due

    store.unarchive_kpi(kpi.id, "alice")
    version = store.get_kpi(kpi.id).version
    single = make_spec()["parameters"][:1]
    sql = "SELECT SUM(amount) AS revenue FROM sales WHERE sold_on >= :start"
    store.update_kpi(kpi.id, {"sql": sql, "parameters": single}, "alice", expected_version=version)
    [unknown] = store.run_due_schedules(due + dt.timedelta(days=1))
    assert unknown.outcome == "failed" and "Unknown parameter(s)" in (unknown.reason or "")
    assert store.executions(kpi.id) == []

    store.update_schedule(made.id, "alice", params={})
    [fired] = store.run_due_schedules(due + dt.timedelta(days=2))
    assert fired.outcome == "fired"


def test_relative_dates_resolve_at_fire_time_in_the_schedules_zone(store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(
        kpi.id, "30 0 * * *", "alice", timezone="Pacific/Auckland", params={"start": "yesterday"}
    )
    # 11:30 UTC on 10 January is 00:30 on 11 January in Auckland (UTC+13 in summer).
    due_at(store, made.id, dt.datetime(2026, 1, 10, 11, 30))
    [tick] = store.run_due_schedules(dt.datetime(2026, 1, 10, 11, 30, 2))
    assert store.execution(tick.run_id or 0).params["start"] == "2026-01-10"
    assert store.schedule(made.id).params == {"start": "yesterday"}


def test_several_stores_claiming_one_tick_fire_it_once(store_url: str, store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "0 9 * * *", "alice")
    others = [KPIStore(store_url) for _ in range(3)]
    start = threading.Barrier(len(others) + 1)
    decided: list[list[Tick]] = []

    def claim(each: KPIStore) -> None:
        start.wait()
        decided.append(each.run_due_schedules(made.next_run_at))

    threads = [threading.Thread(target=claim, args=(s,)) for s in [store, *others]]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for other in others:
            other.close()
    assert sorted(len(d) for d in decided) == [0, 0, 0, 1]
    assert len(store.executions(kpi.id)) == 1 and len(store.schedule_ticks(made.id)) == 1


# -- daylight saving -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (  # spring: 02:30 on 29 March does not exist; it fires once, at 03:30 CEST
            dt.datetime(2026, 3, 28, 1, 30),
            ["2026-03-28 02:30 CET", "2026-03-29 03:30 CEST", "2026-03-30 02:30 CEST"],
        ),
        (  # autumn: 02:30 on 25 October happens twice; it fires once, at the first
            dt.datetime(2026, 10, 24, 0, 30),
            ["2026-10-24 02:30 CEST", "2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"],
        ),
    ],
    ids=["spring", "autumn"],
)
def test_a_0230_berlin_schedule_fires_once_on_each_transition_day(
    store: KPIStore, first: dt.datetime, expected: list[str]
) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "30 2 * * *", "alice", timezone="Europe/Berlin")
    due_at(store, made.id, first)
    start = first.replace(hour=0, minute=0)
    ticks = drive(store, start, start + dt.timedelta(hours=54), dt.timedelta(minutes=10))
    assert [local(t.due_at).strftime("%Y-%m-%d %H:%M %Z") for t in ticks] == expected
    assert {t.outcome for t in ticks} == {"fired"} and all(t.missed == 0 for t in ticks)
    runs = store.executions(kpi.id)
    assert sorted(r.schedule_id for r in runs) == [made.id] * 3
    assert {r.status for r in runs} == {"success"}


def test_an_hourly_schedule_keeps_its_pace_through_both_changes() -> None:
    """Wildcard hours fire in both passes of the repeated hour and once in the skipped."""
    autumn = fire_times("30 * * * *", "Europe/Berlin", dt.datetime(2026, 10, 24, 22), 5)
    assert [t.astimezone(UTC).strftime("%H:%M") for t in autumn] == [
        "22:30",
        "23:30",
        "00:30",
        "01:30",
        "02:30",
    ]
    assert [t.strftime("%H:%M%z") for t in autumn[2:4]] == ["02:30+0200", "02:30+0100"]
    spring = fire_times("*/30 * * * *", "Europe/Berlin", dt.datetime(2026, 3, 29, 0, 15), 4)
    assert [t.astimezone(UTC).strftime("%H:%M") for t in spring] == [
        "00:30",
        "01:00",
        "01:30",
        "02:00",
    ]
    fixed = fire_times("30 1-3 * * *", "Europe/Berlin", dt.datetime(2026, 10, 24, 22), 3)
    assert [t.strftime("%H:%M%z") for t in fixed] == ["01:30+0200", "02:30+0200", "03:30+0100"]


# -- changes and the audit trail --------------------------------------------------------------


def test_every_change_is_audited_with_what_it_changed(store: KPIStore) -> None:
    kpi = store.create_kpi(make_spec(), "alice")
    made = store.create_schedule(kpi.id, "0 9 * * *", "alice")
    [created] = store.audit_log(action="SCHEDULE_CREATE")
    assert (created.actor, created.kpi_id, created.entity) == (
        "alice",
        kpi.id,
        f"schedule:{made.id}",
    )
    assert created.details["cron"] == "0 9 * * *" and created.details["run_as"] == "alice"

    changed = store.update_schedule(made.id, "bob", cron="0 7 * * *", timezone="Asia/Tokyo")
    assert changed.next_run_at is not None and changed.next_run_at.hour == 22  # 07:00 JST
    [update] = store.audit_log(action="SCHEDULE_UPDATE")
    assert update.details["from"] == {
        "cron": "0 9 * * *",
        "timezone": "UTC",
        "next_run_at": made.model_dump(mode="json")["next_run_at"],
    }
    assert update.details["to"]["cron"] == "0 7 * * *"
    assert update.details["to"]["timezone"] == "Asia/Tokyo"
    count = len(store.audit_log(limit=None))
    assert store.update_schedule(made.id, "bob", cron="0  7 * * *") == changed
    assert len(store.audit_log(limit=None)) == count  # nothing changed, nothing recorded
    with pytest.raises(ValidationError, match="no field colour"):
        store.update_schedule(made.id, "bob", colour="red")

    [tick] = store.run_due_schedules(changed.next_run_at)
    store.delete_schedule(made.id, "carol")
    [deleted] = store.audit_log(action="SCHEDULE_DELETE")
    assert deleted.actor == "carol" and deleted.details["timezone"] == "Asia/Tokyo"
    assert store.schedules() == [] and store.execution(tick.run_id or 0).schedule_id == made.id
    with pytest.raises(Exception, match="no schedule with id"):
        store.schedule_ticks(made.id)
    assert store.verify_audit().ok


# -- people, with sign-in on ------------------------------------------------------------------

EDITOR, RUNNER, VIEWER, SCOPED = (
    f"{r}@example.com" for r in ("editor", "runner", "viewer", "scoped")
)


@pytest.fixture()
def signed(store_url: str, source_db: Path, tmp_path: Path) -> Iterator[tuple[KPIStore, int]]:
    """A store with sign-in on: an editor, a runner, a viewer, an editor limited to the
    "other" source, and a KPI on "shop"."""
    store = KPIStore(store_url, settings=auth_settings(store_url))
    shutil.copy(source_db, tmp_path / "other.db")
    store.add_data_source("shop", f"sqlite:///{source_db}", BOSS)
    store.add_data_source("other", f"sqlite:///{tmp_path / 'other.db'}", BOSS)
    for person, role in ((EDITOR, Role.EDITOR), (RUNNER, Role.RUNNER), (VIEWER, Role.VIEWER)):
        store.add_person(person, BOSS, role=role)
    store.add_person(SCOPED, BOSS, role=Role.EDITOR, data_sources=["other"])
    try:
        yield store, store.create_kpi(make_spec(), BOSS).id
    finally:
        store.close()


def test_an_editor_schedules_as_themselves_and_an_admin_as_anyone_active(
    signed: tuple[KPIStore, int],
) -> None:
    store, kpi = signed
    mine = store.create_schedule(kpi, "0 9 * * *", "Editor@Example.com")
    assert mine.run_as == EDITOR
    with pytest.raises(PermissionDeniedError, match="only an admin may schedule runs as"):
        store.create_schedule(kpi, "0 9 * * *", EDITOR, run_as=RUNNER)
    with pytest.raises(PermissionDeniedError, match="only an admin"):
        store.update_schedule(mine.id, EDITOR, run_as=RUNNER)
    [denied] = store.audit_log(action="DENIED", limit=1, actor=BOSS)
    assert (denied.actor, denied.details["operation"]) == (EDITOR, "update_schedule")

    theirs = store.create_schedule(kpi, "0 9 * * *", BOSS, run_as=RUNNER)
    assert theirs.run_as == RUNNER
    for who, why in ((VIEWER, "viewer role"), ("nobody@example.com", "not a known person")):
        with pytest.raises(ValidationError, match=why) as refused:
            store.create_schedule(kpi, "0 9 * * *", BOSS, run_as=who)
        assert "run_as" in refused.value.field_errors
    with pytest.raises(ValidationError, match="may not use the data source shop"):
        store.create_schedule(kpi, "0 9 * * *", BOSS, run_as=SCOPED)


def test_a_scoped_person_neither_sees_nor_changes_schedules_beyond_their_sources(
    signed: tuple[KPIStore, int],
) -> None:
    store, kpi = signed
    made = store.create_schedule(kpi, "0 9 * * *", EDITOR)
    assert store.schedules(actor=SCOPED) == [] and store.schedules(actor=VIEWER) == [made]
    for attempt in (
        lambda: store.schedule(made.id, actor=SCOPED),
        lambda: store.schedule_ticks(made.id, actor=SCOPED),
        lambda: store.pause_schedule(made.id, SCOPED),
        lambda: store.delete_schedule(made.id, SCOPED),
    ):
        with pytest.raises(PermissionDeniedError, match="may not use the data source shop"):
            attempt()
    assert store.schedule(made.id, actor=BOSS).active


def test_a_schedule_whose_person_was_deactivated_fails_its_tick(
    signed: tuple[KPIStore, int],
) -> None:
    store, kpi = signed
    made = store.create_schedule(kpi, "0 9 * * *", EDITOR)
    store.update_person(EDITOR, BOSS, active=False)
    [tick] = store.run_due_schedules(made.next_run_at)
    assert tick.outcome == "failed"
    assert tick.reason == f"It runs as {EDITOR}, and {EDITOR} has been deactivated."
    store.update_person(EDITOR, BOSS, active=True)
    [later] = store.run_due_schedules(made.next_run_at + dt.timedelta(days=1))
    assert later.outcome == "fired"


# -- the command line -------------------------------------------------------------------------


def test_the_schedules_command(
    store_url: str, store: KPIStore, capsys: pytest.CaptureFixture[str]
) -> None:
    kpi = store.create_kpi(make_spec(), "alice")

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["--store", store_url, "--actor", "cli-tester", "schedules", *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = cli(
        "--add",
        "Revenue",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--param",
        "start=start of last month",
        "--param",
        "region=south",
    )
    assert code == 0 and "Added schedule 1 for Revenue." in out and "At 02:30" in out
    made = store.schedule(1)
    assert (made.run_as, made.params["start"]) == ("cli-tester", "start of last month")
    code, out, _ = cli()
    assert code == 0 and "30 2 * * *" in out and "CE" in out  # the next fire, in Berlin time
    assert cli("--pause", "1")[0] == 0 and "paused" in cli("--kpi", str(kpi.id))[1]
    assert cli("--resume", "1")[0] == 0 and store.schedule(1).active
    store.run_due_schedules(store.schedule(1).next_run_at)
    code, out, _ = cli("--ticks", "1")
    assert code == 0 and "fired" in out
    code, _, err = cli("--add", "Revenue", "--cron", "0 25 * * *")
    assert code == 2 and "hour field '25' is not valid" in err
    assert cli("--delete", "1")[0] == 0 and store.schedules() == []
