"""The audit trail: one entry per change, filters, and a tamper-evident hash chain."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from kpi_store import KPI, ValidationError, VersionConflictError


@pytest.fixture()
def kpi(store, kpi_spec) -> KPI:
    return store.create_kpi(kpi_spec(), "alice")


def all_entries(store):
    return store.audit_log(limit=None)


def only_new_entry(store, count_before: int):
    entries = all_entries(store)
    assert len(entries) == count_before + 1
    return entries[0]


# -- one entry per change ---------------------------------------------------------------


def test_create_writes_one_entry_with_the_full_definition(store, kpi_spec):
    before = len(all_entries(store))
    kpi = store.create_kpi(kpi_spec(), "alice")
    entry = only_new_entry(store, before)
    assert (entry.actor, entry.action, entry.kpi_id) == ("alice", "CREATE", kpi.id)
    assert entry.details["version"] == 1
    assert entry.details["after"] == kpi.spec().model_dump(mode="json")


def test_update_writes_one_entry_with_before_and_after_of_changed_fields(store, kpi):
    before = len(all_entries(store))
    store.update_kpi(kpi.id, {"target": 5, "unit": "USD"}, "bob", expected_version=1, note="n")
    entry = only_new_entry(store, before)
    assert (entry.actor, entry.action, entry.kpi_id) == ("bob", "UPDATE", kpi.id)
    assert entry.details["version"] == 2 and entry.details["note"] == "n"
    assert entry.details["changes"] == {
        "target": {"before": 1000.0, "after": 5.0},
        "unit": {"before": "EUR", "after": "USD"},
    }


def test_archive_and_unarchive_each_write_one_entry(store, kpi):
    before = len(all_entries(store))
    store.archive_kpi(kpi.id, "bob")
    entry = only_new_entry(store, before)
    assert (entry.actor, entry.action, entry.kpi_id) == ("bob", "ARCHIVE", kpi.id)
    assert entry.details["changes"] == {"status": {"before": "active", "after": "archived"}}
    store.unarchive_kpi(kpi.id, "carol")
    entry = only_new_entry(store, before + 1)
    assert (entry.actor, entry.action, entry.kpi_id) == ("carol", "UNARCHIVE", kpi.id)
    assert entry.details["changes"] == {"status": {"before": "archived", "after": "active"}}


def test_delete_writes_one_entry_with_the_old_definition(store, kpi):
    before = len(all_entries(store))
    store.delete_kpi(kpi.id, "bob")
    entry = only_new_entry(store, before)
    assert (entry.actor, entry.action, entry.kpi_id) == ("bob", "DELETE", kpi.id)
    assert entry.details["before"] == kpi.spec().model_dump(mode="json")


def test_restore_writes_one_entry_with_the_fields_it_changed_back(store, kpi):
    store.update_kpi(kpi.id, {"target": 5}, "bob", expected_version=1)
    before = len(all_entries(store))
    store.restore_version(kpi.id, 1, "carol")
    entry = only_new_entry(store, before)
    assert (entry.actor, entry.action, entry.kpi_id) == ("carol", "RESTORE", kpi.id)
    assert entry.details["version"] == 3
    assert entry.details["changes"] == {"target": {"before": 5.0, "after": 1000.0}}


def test_data_source_add_and_remove_each_write_one_entry(store, source_db):
    before = len(all_entries(store))
    store.add_data_source("copy", f"sqlite:///{source_db}", "dana")
    entry = only_new_entry(store, before)
    assert (entry.actor, entry.action, entry.kpi_id) == ("dana", "DATA_SOURCE_ADD", None)
    assert entry.details["after"] == {"name": "copy", "url": f"sqlite:///{source_db}"}
    store.remove_data_source("copy", "erin")
    entry = only_new_entry(store, before + 1)
    assert (entry.actor, entry.action, entry.kpi_id) == ("erin", "DATA_SOURCE_REMOVE", None)
    assert entry.details["before"]["name"] == "copy"


def test_data_source_entry_masks_the_password(store, source_db):
    store.add_data_source("secret", f"sqlite://u:s3cret@/{source_db}", "dana")
    entry = store.audit_log(action="DATA_SOURCE_ADD", limit=1)[0]
    assert entry.details["after"]["url"] == f"sqlite://u:***@/{source_db}"
    assert "s3cret" not in str(entry.details)


# -- failed changes write nothing -------------------------------------------------------


def test_version_conflict_writes_no_entry(store, kpi):
    store.update_kpi(kpi.id, {"target": 5}, "bob", expected_version=1)
    before = all_entries(store)
    with pytest.raises(VersionConflictError):
        store.update_kpi(kpi.id, {"target": 6}, "carol", expected_version=1)
    assert all_entries(store) == before


def test_refused_definition_writes_no_entry(store, kpi, kpi_spec):
    before = all_entries(store)
    with pytest.raises(ValidationError):
        store.create_kpi(kpi_spec(name="X", sql="DELETE FROM sales", parameters=[]), "bob")
    with pytest.raises(ValidationError):
        store.update_kpi(kpi.id, {"data_source": "nowhere"}, "bob", expected_version=1)
    with pytest.raises(ValidationError):
        store.remove_data_source("shop", "bob")  # used by the KPI
    assert all_entries(store) == before


def test_no_op_changes_write_no_entry(store, kpi):
    before = all_entries(store)
    store.update_kpi(kpi.id, {"target": 1000}, "bob", expected_version=1)
    store.unarchive_kpi(kpi.id, "bob")  # already active
    assert all_entries(store) == before


# -- filters ----------------------------------------------------------------------------


@pytest.fixture()
def busy_log(store, kpi_spec):
    """Two KPIs changed by three people: 1 source + 6 KPI entries."""
    a = store.create_kpi(kpi_spec(name="A"), "alice")
    b = store.create_kpi(kpi_spec(name="B"), "bob")
    store.update_kpi(a.id, {"target": 1}, "bob", expected_version=1)
    store.update_kpi(a.id, {"target": 2}, "carol", expected_version=2)
    store.archive_kpi(b.id, "carol")
    store.update_kpi(a.id, {"target": 3}, "alice", expected_version=3)
    return a, b


def test_audit_log_is_newest_first(store, busy_log):
    entries = all_entries(store)
    assert [e.id for e in entries] == sorted((e.id for e in entries), reverse=True)
    assert [e.action for e in entries] == [
        "UPDATE",
        "ARCHIVE",
        "UPDATE",
        "UPDATE",
        "CREATE",
        "CREATE",
        "DATA_SOURCE_ADD",
    ]


def test_audit_log_filters_by_kpi_actor_and_action(store, busy_log):
    a, b = busy_log
    assert [e.details.get("version") for e in store.audit_log(kpi_id=a.id)] == [4, 3, 2, 1]
    assert {e.kpi_id for e in store.audit_log(kpi_id=b.id)} == {b.id}
    assert [e.action for e in store.audit_log(person="carol")] == ["ARCHIVE", "UPDATE"]
    assert len(store.audit_log(action="UPDATE")) == 3
    assert len(store.audit_log(action="update")) == 3
    assert [e.actor for e in store.audit_log(kpi_id=a.id, person="alice", action="UPDATE")] == [
        "alice"
    ]
    assert store.audit_log(person="nobody") == []


def test_audit_log_limit_keeps_the_newest(store, busy_log):
    newest = all_entries(store)[:2]
    assert store.audit_log(limit=2) == newest
    assert len(store.audit_log()) == 7  # default limit of 100 is not reached


def test_audit_log_since_and_until_datetimes(store, busy_log):
    entries = all_entries(store)
    pivot = entries[3]
    since = store.audit_log(since=pivot.occurred_at, limit=None)
    assert pivot in since and all(e.occurred_at >= pivot.occurred_at for e in since)
    assert {e.id for e in entries if e.id >= pivot.id} <= {e.id for e in since}
    until = store.audit_log(until=pivot.occurred_at, limit=None)  # until is exclusive
    assert pivot not in until and all(e.occurred_at < pivot.occurred_at for e in until)
    assert {e.id for e in since} | {e.id for e in until} == {e.id for e in entries}


def test_audit_log_accepts_timezone_aware_datetimes(store, busy_log):
    pivot = all_entries(store)[3]
    aware = pivot.occurred_at.replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert store.audit_log(since=aware, limit=None) == store.audit_log(
        since=pivot.occurred_at, limit=None
    )


def test_audit_log_date_bounds_cover_whole_days(store, busy_log):
    everything = all_entries(store)
    first, last = everything[-1].occurred_at.date(), everything[0].occurred_at.date()
    one = dt.timedelta(days=1)
    assert store.audit_log(since=first, until=last, limit=None) == everything
    assert store.audit_log(since=last + one, limit=None) == []
    assert store.audit_log(until=first - one, limit=None) == []


# -- the hash chain ---------------------------------------------------------------------


def test_verify_audit_is_ok_on_a_clean_log(store, busy_log):
    result = store.verify_audit()
    assert result.ok and result.first_broken_id is None
    assert result.checked == len(all_entries(store))


def test_entries_are_chained(store, busy_log):
    oldest_first = list(reversed(all_entries(store)))
    assert oldest_first[0].prev_hash == "0" * 64
    for previous, entry in zip(oldest_first, oldest_first[1:], strict=False):
        assert entry.prev_hash == previous.entry_hash


def tamper(store, sql: str, **params) -> None:
    """Change the log behind the store's back: a plain connection, no API, no new hash."""
    with store.engine.begin() as connection:
        connection.execute(sa.text(sql), params)


def test_edited_details_are_detected_at_that_entry(store, busy_log):
    target = all_entries(store)[3]
    forged = target.details["changes"]["target"] | {"after": 99.0}
    assert target.actor == "bob" and forged != target.details["changes"]["target"]
    tamper(
        store,
        "UPDATE kpi_audit_log SET details = :details WHERE id = :id",
        details=json.dumps({**target.details, "changes": {"target": forged}}),
        id=target.id,
    )
    result = store.verify_audit()
    assert not result.ok
    assert result.first_broken_id == target.id
    assert str(target.id) in result.reason


def test_edited_actor_of_newest_entry_is_detected(store, busy_log):
    newest = all_entries(store)[0]
    tamper(store, "UPDATE kpi_audit_log SET actor = 'mallory' WHERE id = :id", id=newest.id)
    assert store.verify_audit().first_broken_id == newest.id


def test_deleted_middle_entry_is_detected_at_its_successor(store, busy_log):
    oldest_first = list(reversed(all_entries(store)))
    removed, successor = oldest_first[3], oldest_first[4]
    tamper(store, "DELETE FROM kpi_audit_log WHERE id = :id", id=removed.id)
    result = store.verify_audit()
    assert not result.ok
    assert result.first_broken_id == successor.id
    assert result.checked == 3


def test_rehashed_entry_still_breaks_the_chain_after_it(store, busy_log):
    """Recomputing a forged entry's own hash is not enough: the next entry no longer fits."""
    oldest_first = list(reversed(all_entries(store)))
    forged, successor = oldest_first[2], oldest_first[3]
    tamper(
        store, "UPDATE kpi_audit_log SET entry_hash = :h WHERE id = :id", h="f" * 64, id=forged.id
    )
    result = store.verify_audit()
    assert result.first_broken_id == forged.id
    tamper(
        store,
        "UPDATE kpi_audit_log SET entry_hash = :h WHERE id = :id",
        h=forged.entry_hash,
        id=forged.id,
    )
    tamper(
        store, "UPDATE kpi_audit_log SET prev_hash = :h WHERE id = :id", h="e" * 64, id=successor.id
    )
    assert store.verify_audit().first_broken_id == successor.id
