"""KPI definitions: create, read, list, version, diff, restore, archive, delete, refuse."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from kpi_store import (
    KPI,
    NotFoundError,
    UnsafeQueryError,
    ValidationError,
    VersionConflictError,
)


@pytest.fixture()
def kpi(store, kpi_spec) -> KPI:
    return store.create_kpi(kpi_spec(), "alice")


def history_rows(store, kpi_id: int) -> int:
    with store.engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT count(*) FROM kpi_definition_history WHERE kpi_id = :k"),
            {"k": kpi_id},
        ).scalar_one()


# -- create / get / list -------------------------------------------------------------


def test_create_returns_version_one_with_every_field(store, kpi_spec):
    kpi = store.create_kpi(kpi_spec(), "alice")
    assert (kpi.version, kpi.status, kpi.created_by, kpi.updated_by) == (
        1,
        "active",
        "alice",
        "alice",
    )
    assert kpi.name == "Revenue" and kpi.data_source == "shop" and kpi.unit == "EUR"
    assert kpi.parameters[0].default == dt.date(2024, 1, 1)
    assert kpi.parameters[1].choices == ["north", "south", "east", "west"]
    assert kpi.tags == ["finance", "sales"]


def test_create_fills_defaults_for_optional_fields(store):
    kpi = store.create_kpi({"name": "Rows", "data_source": "shop", "sql": "SELECT 1"}, "a")
    assert kpi.aggregation == "sum" and kpi.direction == "higher_is_better"
    assert kpi.tolerance_pct == 10.0 and kpi.value_column is None
    assert kpi.parameters == [] and kpi.tags == [] and kpi.target is None


def test_get_returns_the_stored_kpi(store, kpi):
    assert store.get_kpi(kpi.id) == kpi


def test_list_is_sorted_by_name_and_hides_archived(store, kpi_spec):
    b = store.create_kpi(kpi_spec(name="beta"), "a")
    a = store.create_kpi(kpi_spec(name="Alpha"), "a")
    c = store.create_kpi(kpi_spec(name="Gamma"), "a")
    store.archive_kpi(c.id, "a")
    assert [k.id for k in store.list_kpis()] == [a.id, b.id]
    assert [k.id for k in store.list_kpis(include_archived=True)] == [a.id, b.id, c.id]


def test_list_search_matches_name_description_definition_and_owner(store, kpi_spec):
    by_name = store.create_kpi(kpi_spec(name="Churn rate"), "a")
    by_desc = store.create_kpi(kpi_spec(name="K2", description="Lost CHURNED users"), "a")
    by_nl = store.create_kpi(kpi_spec(name="K3", nl_definition="users who churn"), "a")
    by_owner = store.create_kpi(kpi_spec(name="K4", owner="churn-team"), "a")
    store.create_kpi(kpi_spec(name="Unrelated"), "a")
    found = {k.id for k in store.list_kpis(search="  churn ")}
    assert found == {by_name.id, by_desc.id, by_nl.id, by_owner.id}


def test_list_search_treats_wildcards_literally(store, kpi_spec):
    store.create_kpi(kpi_spec(name="Margin 50% share"), "a")
    store.create_kpi(kpi_spec(name="Margin 500 share"), "a")
    assert [k.name for k in store.list_kpis(search="50%")] == ["Margin 50% share"]
    assert [k.name for k in store.list_kpis(search="_")] == []


def test_list_filters_by_tag(store, kpi_spec):
    store.create_kpi(kpi_spec(name="A", tags=["ops"]), "a")
    b = store.create_kpi(kpi_spec(name="B", tags=["finance", "board"]), "a")
    assert [k.id for k in store.list_kpis(tag="board")] == [b.id]
    assert store.list_kpis(tag="nope") == []


def test_list_search_and_tag_combine(store, kpi_spec):
    store.create_kpi(kpi_spec(name="Revenue EU", tags=["eu"]), "a")
    us = store.create_kpi(kpi_spec(name="Revenue US", tags=["us"]), "a")
    store.create_kpi(kpi_spec(name="Costs US", tags=["us"]), "a")
    assert [k.id for k in store.list_kpis(search="revenue", tag="us")] == [us.id]


# -- update, versions, diff, restore ----------------------------------------------------


def test_update_with_expected_version_saves_version_two(store, kpi):
    updated = store.update_kpi(kpi.id, {"target": 2000}, "bob", expected_version=1, note="FY25")
    assert (updated.version, updated.target, updated.updated_by) == (2, 2000.0, "bob")
    assert updated.created_by == "alice"
    assert store.get_kpi(kpi.id) == updated


def test_update_without_changes_keeps_the_version(store, kpi, table_counts):
    before = table_counts()
    same = store.update_kpi(kpi.id, {"unit": "EUR"}, "bob", expected_version=1)
    assert same.version == 1
    assert table_counts() == before


def test_update_rejects_unknown_fields(store, kpi):
    with pytest.raises(ValidationError) as caught:
        store.update_kpi(kpi.id, {"colour": "red"}, "bob", expected_version=1)
    assert "colour" in caught.value.field_errors


def test_every_version_has_a_history_row_current_included(store, kpi):
    store.update_kpi(kpi.id, {"target": 2}, "bob", expected_version=1, note="n2")
    store.update_kpi(kpi.id, {"unit": "USD"}, "carol", expected_version=2)
    versions = store.kpi_versions(kpi.id)
    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.changed_by for v in versions] == ["carol", "bob", "alice"]
    assert [v.action for v in versions] == ["update", "update", "create"]
    assert versions[1].note == "n2"
    assert versions[0].spec == store.get_kpi(kpi.id).spec()
    assert history_rows(store, kpi.id) == 3


def test_get_old_version_returns_the_spec_saved_then(store, kpi):
    store.update_kpi(kpi.id, {"target": 5}, "bob", expected_version=1)
    old = store.get_kpi(kpi.id, version=1)
    assert old.version == 1 and old.target == 1000.0 and old.spec() == kpi.spec()
    assert store.get_kpi(kpi.id, version=2).target == 5.0


def test_diff_lists_changed_fields_and_a_unified_sql_diff(store, kpi):
    new_sql = kpi.sql.replace("SUM(amount)", "AVG(amount)")
    store.update_kpi(kpi.id, {"sql": new_sql, "target": 50}, "bob", expected_version=1)
    diff = store.diff_versions(kpi.id, 1, 2)
    assert (diff.kpi_id, diff.version_a, diff.version_b) == (kpi.id, 1, 2)
    assert {c.field: (c.before, c.after) for c in diff.changes} == {
        "sql": (kpi.sql, new_sql),
        "target": (1000.0, 50.0),
    }
    lines = diff.sql_diff.splitlines()
    assert lines[:2] == ["--- version 1", "+++ version 2"]
    assert "-SELECT SUM(amount) AS revenue FROM sales" in lines
    assert "+SELECT AVG(amount) AS revenue FROM sales" in lines
    assert " WHERE sold_on >= :start AND region = :region" in lines


def test_diff_of_a_version_with_itself_is_empty(store, kpi):
    diff = store.diff_versions(kpi.id, 1, 1)
    assert diff.changes == [] and diff.sql_diff == ""


def test_restore_makes_a_new_version_equal_to_the_old_one(store, kpi):
    store.update_kpi(kpi.id, {"target": 1, "tags": ["x"]}, "bob", expected_version=1)
    store.update_kpi(kpi.id, {"unit": "USD"}, "bob", expected_version=2)
    history_before = store.kpi_versions(kpi.id)
    restored = store.restore_version(kpi.id, 1, "carol")
    assert restored.version == 4 and restored.spec() == kpi.spec()
    assert restored.updated_by == "carol"
    versions = store.kpi_versions(kpi.id)
    assert versions[1:] == history_before  # history is not rewritten
    assert (versions[0].action, versions[0].note) == ("restore", "Restored version 1")


def test_stale_expected_version_raises_and_changes_nothing(store, kpi, table_counts):
    current = store.update_kpi(kpi.id, {"target": 1}, "bob", expected_version=1)
    before = table_counts()
    with pytest.raises(VersionConflictError) as caught:
        store.update_kpi(kpi.id, {"target": 99}, "carol", expected_version=1)
    assert (caught.value.current_version, caught.value.expected_version) == (2, 1)
    assert store.get_kpi(kpi.id) == current
    assert table_counts() == before


# -- archive / unarchive / delete -------------------------------------------------------


def test_archive_and_unarchive_toggle_status_without_a_new_version(store, kpi):
    archived = store.archive_kpi(kpi.id, "bob")
    assert (archived.status, archived.version, archived.updated_by) == ("archived", 1, "bob")
    assert store.list_kpis() == []
    active = store.unarchive_kpi(kpi.id, "carol")
    assert (active.status, active.version) == ("active", 1)
    assert [k.id for k in store.list_kpis()] == [kpi.id]


def test_archived_kpi_cannot_be_edited(store, kpi):
    store.archive_kpi(kpi.id, "bob")
    with pytest.raises(ValidationError):
        store.update_kpi(kpi.id, {"target": 1}, "bob", expected_version=1)


def test_delete_removes_kpi_and_history_but_keeps_audit(store, kpi):
    store.update_kpi(kpi.id, {"target": 7}, "bob", expected_version=1)
    store.delete_kpi(kpi.id, "carol")
    with pytest.raises(NotFoundError):
        store.get_kpi(kpi.id)
    assert history_rows(store, kpi.id) == 0
    entries = store.audit_log(kpi_id=kpi.id)
    assert [e.action for e in entries] == ["DELETE", "UPDATE", "CREATE"]
    deleted = entries[0]
    assert deleted.actor == "carol" and deleted.details["version"] == 2
    assert deleted.details["before"]["target"] == 7.0
    assert deleted.details["before"]["sql"] == kpi.sql


def test_deleted_kpi_id_is_never_reused(store, kpi, kpi_spec):
    """A new KPI must not inherit the deleted one's id (and with it its audit trail)."""
    store.delete_kpi(kpi.id, "alice")
    other = store.create_kpi(kpi_spec(name="Other"), "bob")
    assert other.id != kpi.id
    assert [e.action for e in store.audit_log(kpi_id=other.id)] == ["CREATE"]


# -- names ------------------------------------------------------------------------------


def test_duplicate_active_name_is_refused_case_insensitively(store, kpi, kpi_spec, table_counts):
    before = table_counts()
    with pytest.raises(ValidationError) as caught:
        store.create_kpi(kpi_spec(name="  REVENUE "), "bob")
    assert "name" in caught.value.field_errors
    assert table_counts() == before


def test_duplicate_non_ascii_name_is_refused_case_insensitively(store, kpi_spec, table_counts):
    store.create_kpi(kpi_spec(name="Umsatz Österreich"), "alice")
    before = table_counts()
    for duplicate in ("Umsatz Österreich", "umsatz österreich", "UMSATZ ÖSTERREICH"):
        with pytest.raises(ValidationError) as caught:
            store.create_kpi(kpi_spec(name=duplicate), "bob")
        assert "name" in caught.value.field_errors
    assert table_counts() == before


def test_renaming_onto_an_active_name_is_refused(store, kpi, kpi_spec):
    other = store.create_kpi(kpi_spec(name="Other"), "a")
    with pytest.raises(ValidationError) as caught:
        store.update_kpi(other.id, {"name": "revenue"}, "a", expected_version=1)
    assert "name" in caught.value.field_errors


def test_archived_name_may_be_reused(store, kpi, kpi_spec):
    store.archive_kpi(kpi.id, "alice")
    again = store.create_kpi(kpi_spec(name="revenue"), "bob")
    assert again.id != kpi.id and again.status == "active"


def test_unarchive_refused_while_another_active_kpi_has_the_name(store, kpi, kpi_spec):
    store.archive_kpi(kpi.id, "alice")
    store.create_kpi(kpi_spec(), "bob")
    with pytest.raises(ValidationError):
        store.unarchive_kpi(kpi.id, "alice")
    assert store.get_kpi(kpi.id).status == "archived"


# -- unknown ids and versions -----------------------------------------------------------

UNKNOWN = 424242


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_kpi(UNKNOWN),
        lambda s: s.update_kpi(UNKNOWN, {"target": 1}, "a", expected_version=1),
        lambda s: s.archive_kpi(UNKNOWN, "a"),
        lambda s: s.unarchive_kpi(UNKNOWN, "a"),
        lambda s: s.delete_kpi(UNKNOWN, "a"),
        lambda s: s.kpi_versions(UNKNOWN),
        lambda s: s.restore_version(UNKNOWN, 1, "a"),
        lambda s: s.diff_versions(UNKNOWN, 1, 1),
    ],
    ids=["get", "update", "archive", "unarchive", "delete", "versions", "restore", "diff"],
)
def test_unknown_kpi_id_raises_not_found(store, kpi, table_counts, call):
    before = table_counts()
    with pytest.raises(NotFoundError):
        call(store)
    assert table_counts() == before


@pytest.mark.parametrize(
    "call",
    [
        lambda s, k: s.get_kpi(k, version=9),
        lambda s, k: s.get_kpi(k, version=0),
        lambda s, k: s.restore_version(k, 9, "a"),
        lambda s, k: s.diff_versions(k, 1, 9),
        lambda s, k: s.diff_versions(k, 9, 1),
    ],
    ids=["get", "get-zero", "restore", "diff-b", "diff-a"],
)
def test_unknown_version_raises_not_found(store, kpi, table_counts, call):
    before = table_counts()
    with pytest.raises(NotFoundError):
        call(store, kpi.id)
    assert table_counts() == before


# -- validation refusals ----------------------------------------------------------------

UNSAFE_SQL = {
    "insert": "INSERT INTO sales (region) VALUES ('x')",
    "update": "UPDATE sales SET amount = 0",
    "delete": "DELETE FROM sales",
    "replace": "REPLACE INTO sales (id, region) VALUES (1, 'x')",
    "insert-or-replace": "INSERT OR REPLACE INTO sales (id) VALUES (1)",
    "create": "CREATE TABLE t (x INTEGER)",
    "create-as": "CREATE TABLE t AS SELECT * FROM sales",
    "drop": "DROP TABLE sales",
    "alter": "ALTER TABLE sales ADD COLUMN y INTEGER",
    "pragma": "PRAGMA journal_mode=DELETE",
    "attach": "ATTACH DATABASE 'other.db' AS other",
    "detach": "DETACH DATABASE other",
    "vacuum": "VACUUM",
    "multiple": "SELECT 1; SELECT 2",
    "hidden-after-block-comment": "SELECT 1 /* x */; DROP TABLE sales",
    "hidden-after-line-comment": "SELECT 1 -- x\n; DROP TABLE sales",
    "cte-delete": "WITH gone AS (DELETE FROM sales RETURNING *) SELECT * FROM gone",
    "select-into": "SELECT * INTO backup FROM sales",
    "transaction": "BEGIN",
    "unreadable": "SELEC amount FROM",
}


@pytest.mark.parametrize("sql", UNSAFE_SQL.values(), ids=UNSAFE_SQL.keys())
def test_unsafe_sql_is_refused_on_create(store, kpi_spec, table_counts, sql):
    before = table_counts()
    with pytest.raises(UnsafeQueryError) as caught:
        store.create_kpi(kpi_spec(sql=sql, parameters=[]), "alice")
    assert isinstance(caught.value, ValidationError)
    assert "sql" in caught.value.field_errors
    assert table_counts() == before


@pytest.mark.parametrize("sql", UNSAFE_SQL.values(), ids=UNSAFE_SQL.keys())
def test_unsafe_sql_is_refused_on_update(store, kpi, table_counts, sql):
    before = table_counts()
    with pytest.raises(UnsafeQueryError):
        store.update_kpi(kpi.id, {"sql": sql, "parameters": []}, "bob", expected_version=1)
    assert store.get_kpi(kpi.id) == kpi
    assert table_counts() == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT region, SUM(amount) AS total FROM sales GROUP BY region",
        "WITH s AS (SELECT * FROM sales) SELECT COUNT(*) FROM s",
        "SELECT amount FROM sales UNION ALL SELECT 0",
        "-- a comment is fine\nSELECT 1 /* and so is this */;",
    ],
    ids=["select", "with", "union", "comments"],
)
def test_read_only_queries_are_accepted(store, kpi_spec, sql):
    spec = kpi_spec(sql=sql, parameters=[], value_column=None)
    assert store.create_kpi(spec, "alice").version == 1


# Each case: spec overrides, and the field_errors key expected (or a key prefix).
INVALID_SPECS = {
    "unknown-data-source": ({"data_source": "nowhere"}, "data_source"),
    "param-used-not-declared": (
        {"sql": "SELECT 1 WHERE :start < :end AND :region = 'x'"},
        "parameters",
    ),
    "param-declared-not-used": ({"sql": "SELECT 1 WHERE :start > '2000-01-01'"}, "parameters"),
    "default-wrong-type": (
        {
            "sql": "SELECT 1 WHERE :n > 0",
            "parameters": [{"name": "n", "type": "int", "default": "many"}],
        },
        "parameters[0]",
    ),
    "default-bad-date": (
        {
            "sql": "SELECT 1 WHERE :d > 0",
            "parameters": [{"name": "d", "type": "date", "default": "31/12/2024"}],
        },
        "parameters[0]",
    ),
    "default-outside-choices": (
        {
            "sql": "SELECT 1 WHERE :r = 'x'",
            "parameters": [{"name": "r", "choices": ["north", "south"], "default": "mars"}],
        },
        "parameters[0]",
    ),
    "bad-parameter-type": (
        {"sql": "SELECT 1 WHERE :r = 'x'", "parameters": [{"name": "r", "type": "money"}]},
        "parameters[0].type",
    ),
    "bad-parameter-name": (
        {"sql": "SELECT 1", "parameters": [{"name": "1st"}]},
        "parameters[0].name",
    ),
    "bad-aggregation": ({"aggregation": "median"}, "aggregation"),
    "bad-direction": ({"direction": "sideways"}, "direction"),
    "negative-tolerance": ({"tolerance_pct": -1}, "tolerance_pct"),
    "target-not-number": ({"target": "lots"}, "target"),
    "blank-name": ({"name": "   "}, "name"),
    "blank-sql": ({"sql": "  "}, "sql"),
    "unknown-field": ({"colour": "red"}, "colour"),
}


@pytest.mark.parametrize("overrides,field", INVALID_SPECS.values(), ids=INVALID_SPECS.keys())
def test_invalid_spec_is_refused_naming_the_field(store, kpi_spec, table_counts, overrides, field):
    before = table_counts()
    with pytest.raises(ValidationError) as caught:
        store.create_kpi(kpi_spec(**overrides), "alice")
    assert field in caught.value.field_errors, caught.value.field_errors
    assert table_counts() == before


@pytest.mark.parametrize("missing", ["name", "data_source", "sql"])
def test_missing_required_field_is_refused(store, kpi_spec, table_counts, missing):
    spec = kpi_spec()
    del spec[missing]
    before = table_counts()
    with pytest.raises(ValidationError) as caught:
        store.create_kpi(spec, "alice")
    label = {"name": "Name", "data_source": "Data source", "sql": "SQL"}[missing]
    assert caught.value.field_errors[missing] == f"{label} is required"
    assert table_counts() == before


@pytest.mark.parametrize(
    "field,value", [("unit", "u" * 51), ("owner", "o" * 201)], ids=["unit", "owner"]
)
def test_value_longer_than_its_column_is_refused(store, kpi_spec, table_counts, field, value):
    """SQLite stores any length; PostgreSQL would fail with a raw DataError instead."""
    before = table_counts()
    with pytest.raises(ValidationError) as caught:
        store.create_kpi(kpi_spec(**{field: value}), "alice")
    assert field in caught.value.field_errors
    assert table_counts() == before


@pytest.mark.parametrize("actor", ["", "   ", None])
def test_empty_actor_is_refused_everywhere(store, kpi, kpi_spec, table_counts, actor):
    before = table_counts()
    calls = [
        lambda: store.create_kpi(kpi_spec(name="New"), actor),
        lambda: store.update_kpi(kpi.id, {"target": 1}, actor, expected_version=1),
        lambda: store.archive_kpi(kpi.id, actor),
        lambda: store.delete_kpi(kpi.id, actor),
        lambda: store.restore_version(kpi.id, 1, actor),
    ]
    for call in calls:
        with pytest.raises(ValidationError) as caught:
            call()
        assert "actor" in caught.value.field_errors
    assert table_counts() == before


def test_validate_kpi_checks_without_writing(store, kpi_spec, table_counts):
    before = table_counts()
    assert store.validate_kpi(kpi_spec()).name == "Revenue"
    with pytest.raises(UnsafeQueryError):
        store.validate_kpi(kpi_spec(sql="DROP TABLE sales", parameters=[]))
    assert table_counts() == before
