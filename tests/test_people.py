"""People: sign-in on every visit, KPI_ADMINS, the default role, adding and changing people
(every change audited), finding people in the audit log, and the CLI acting as a person."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import make_spec

from kpi_store import KPIStore, NotFoundError, PermissionDeniedError, Role, ValidationError
from kpi_store.config import Settings
from kpi_store.schema import people as people_table

ROOT = Path(__file__).resolve().parents[1]
BOSS = "boss@example.com"


def auth_store(url: str, **changes: str) -> KPIStore:
    changes = {"auth": "oidc", "admins": BOSS, **changes}
    settings = Settings.from_env().replace(url=url, **changes)
    return KPIStore(url, settings=settings)


@pytest.fixture()
def desk(store_url: str, source_db: Path) -> Iterator[KPIStore]:
    store = auth_store(store_url)
    store.add_data_source("shop", f"sqlite:///{source_db}", BOSS)
    try:
        yield store
    finally:
        store.close()


# -- signing in -------------------------------------------------------------------------------


def test_a_first_sign_in_adds_the_person_with_the_default_role(desk: KPIStore) -> None:
    ann = desk.sign_in("Ann@Example.com", "Ann Lima")
    assert (ann.email, ann.display_name, ann.role, ann.active) == (
        "ann@example.com",
        "Ann Lima",
        Role.VIEWER,
        True,
    )
    assert ann.last_seen_at is not None and ann.data_sources == ()
    [added] = desk.audit_log(action="PERSON_ADD", person="ann", actor=BOSS)
    assert added.actor == "ann@example.com" and added.details["via"] == "sign-in"
    again = desk.sign_in("ann@example.com", "Ann Lima")
    assert again.role == Role.VIEWER
    assert len(desk.people(actor=BOSS)) == 2  # Ann and the KPI_ADMINS admin


def test_kpi_admins_are_admins_from_their_first_sign_in(desk: KPIStore) -> None:
    boss = desk.sign_in("BOSS@example.com", "The Boss")
    assert boss.role == Role.ADMIN


def test_default_role_none_refuses_people_nobody_added(store_url: str) -> None:
    store = auth_store(store_url, default_role="none")
    try:
        with pytest.raises(PermissionDeniedError, match="ask an admin to add you"):
            store.sign_in("newcomer@example.com", "New Comer")
        store.add_person("newcomer@example.com", BOSS, role=Role.RUNNER)
        assert store.sign_in("newcomer@example.com", "New Comer").role == Role.RUNNER
        [denied] = store.audit_log(action="DENIED", actor=BOSS)
        assert (denied.actor, denied.details["operation"]) == ("newcomer@example.com", "sign_in")
    finally:
        store.close()


def test_a_deactivated_person_cannot_sign_in_until_reactivated(desk: KPIStore) -> None:
    desk.add_person("dan@example.com", BOSS, role=Role.EDITOR)
    desk.update_person("dan@example.com", BOSS, active=False)
    with pytest.raises(PermissionDeniedError, match="deactivated"):
        desk.sign_in("dan@example.com", "Dan")
    desk.update_person("dan@example.com", BOSS, active=True)
    assert desk.sign_in("dan@example.com", "Dan").role == Role.EDITOR


def test_a_visit_refreshes_last_seen_at_most_once_a_minute(desk: KPIStore) -> None:
    first = desk.sign_in("eve@example.com", "Eve")
    assert desk.sign_in("eve@example.com", "Eve").last_seen_at == first.last_seen_at
    long_ago = dt.datetime(2020, 1, 1)
    with desk.engine.begin() as connection:
        connection.execute(sa.update(people_table).values(last_seen_at=long_ago))
    later = desk.sign_in("eve@example.com", "Eve").last_seen_at
    assert later is not None and later > long_ago


def test_a_kpi_admins_person_demoted_by_hand_is_an_admin_again_at_sign_in(desk: KPIStore) -> None:
    desk.sign_in(BOSS, "Boss")
    with desk.engine.begin() as connection:  # as if KPI_ADMINS had been empty meanwhile
        connection.execute(sa.update(people_table).values(role="viewer", active=False))
    assert desk.sign_in(BOSS, "Boss").role == Role.ADMIN


# -- adding and changing people ---------------------------------------------------------------


def test_every_change_to_a_person_is_audited_with_what_changed(desk: KPIStore) -> None:
    desk.add_person("fay@example.com", BOSS, display_name="Fay", role="runner")
    fay = desk.update_person(
        "FAY@example.com", BOSS, role=Role.EDITOR, data_sources=["shop"], display_name="Fay Wu"
    )
    assert (fay.role, fay.data_sources, fay.display_name) == (Role.EDITOR, ("shop",), "Fay Wu")
    [change] = desk.audit_log(action="PERSON_UPDATE", actor=BOSS)
    assert change.actor == BOSS and change.entity == "person:fay@example.com"
    assert change.details["changes"] == {
        "role": {"from": "runner", "to": "editor"},
        "data_sources": {"from": [], "to": ["shop"]},
        "display_name": {"from": "Fay", "to": "Fay Wu"},
    }
    same = desk.update_person("fay@example.com", BOSS, role="editor")
    assert same == fay
    assert len(desk.audit_log(action="PERSON_UPDATE", actor=BOSS)) == 1  # nothing changed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"role": "owner"}, "'owner' is not a role"),
        ({"data_sources": ["nowhere"]}, "no data source named 'nowhere'"),
    ],
)
def test_bad_changes_are_refused_by_name(desk: KPIStore, change: dict, message: str) -> None:
    desk.add_person("gil@example.com", BOSS)
    with pytest.raises(ValidationError, match=message):
        desk.update_person("gil@example.com", BOSS, **change)
    assert desk.person("gil@example.com", actor=BOSS).role == Role.VIEWER


@pytest.mark.parametrize("address", ["", "not-an-email", "two@@example.com", "a b@example.com"])
def test_an_email_must_be_one(desk: KPIStore, address: str) -> None:
    with pytest.raises(ValidationError, match="is not an email address"):
        desk.add_person(address, BOSS)


def test_an_email_is_taken_once_whatever_its_case(desk: KPIStore) -> None:
    desk.add_person("hal@example.com", BOSS)
    with pytest.raises(ValidationError, match="already a person"):
        desk.add_person("HAL@example.com", BOSS)
    with pytest.raises(NotFoundError):
        desk.update_person("nobody@example.com", BOSS, role="admin")


def test_kpi_admins_people_and_the_last_admin_stay_admins(store_url: str) -> None:
    store = auth_store(store_url)
    try:
        store.sign_in(BOSS, "Boss")
        with pytest.raises(ValidationError, match="through KPI_ADMINS"):
            store.update_person(BOSS, BOSS, role=Role.EDITOR)
    finally:
        store.close()
    # Without KPI_ADMINS, the only active admin cannot demote or deactivate themselves.
    store = auth_store(store_url, admins="")
    try:
        store.add_person("ivy@example.com", BOSS, role=Role.ADMIN)
        store.update_person(BOSS, "ivy@example.com", role=Role.VIEWER)
        for change in ({"role": Role.EDITOR}, {"active": False}):
            with pytest.raises(ValidationError, match="last active admin"):
                store.update_person("ivy@example.com", "ivy@example.com", **change)
    finally:
        store.close()


# -- the audit log finds people by any part of their email or name ------------------------------


def test_the_audit_filter_finds_people_by_email_or_name_in_any_case(desk: KPIStore) -> None:
    desk.add_person("jo.muller@example.com", BOSS, display_name="Jo MÜLLER", role=Role.EDITOR)
    desk.create_kpi(make_spec(), "jo.muller@example.com")
    for text in ("jo.muller@example.com", "JO.MULLER", "müller", "Müller", "jo m", "EXAMPLE"):
        actors = {e.actor for e in desk.audit_log(person=text, action="CREATE", actor=BOSS)}
        assert actors == {"jo.muller@example.com"}, text
    assert desk.audit_log(person="nobody-like-this", actor=BOSS) == []
    assert desk.audit_log(person="%", action="CREATE", actor=BOSS) == []  # a literal %


# -- the CLI acts as a person ---------------------------------------------------------------------


def cli(url: str, actor: str, *args: str, auth: str = "oidc") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_ACTOR")}
    env.update(KPI_AUTH=auth, KPI_ADMINS=BOSS, KPI_STORE_URL=url, KPI_ACTOR=actor)
    return subprocess.run(
        [sys.executable, "-m", "kpi_store", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.sqlite_only
def test_the_cli_is_held_to_the_actors_role_when_sign_in_is_on(
    store_url: str, source_db: Path
) -> None:
    store = auth_store(store_url)
    store.add_data_source("shop", f"sqlite:///{source_db}", BOSS)
    kpi = store.create_kpi(make_spec(), BOSS)
    store.close()

    added = cli(store_url, BOSS, "people", "--add", "Vic@Example.com", "--name", "Vic")
    assert added.returncode == 0, added.stderr
    assert "Added Vic <vic@example.com> as viewer." in added.stdout

    refused = cli(store_url, "vic@example.com", "run", str(kpi.id))
    assert refused.returncode == 2
    assert "Not allowed (execute)" in refused.stderr and "vic@example.com" in refused.stderr
    assert "Traceback" not in refused.stderr

    promoted = cli(store_url, BOSS, "people", "--set", "vic@example.com", "--role", "runner")
    assert promoted.returncode == 0 and "runner, active" in promoted.stdout
    ran = cli(store_url, "vic@example.com", "run", str(kpi.id))
    assert ran.returncode == 0, ran.stderr

    stranger = cli(store_url, "someone", "list")
    assert stranger.returncode == 2 and "only a known person" in stranger.stderr

    listed = cli(store_url, BOSS, "people")
    assert "vic@example.com" in listed.stdout and "runner" in listed.stdout
    audit = cli(store_url, BOSS, "audit", "--person", "VIC", "--action", "execute")
    assert audit.returncode == 0 and "vic@example.com" in audit.stdout


@pytest.mark.sqlite_only
def test_the_cli_with_sign_in_off_acts_as_any_name(store_url: str) -> None:
    done = cli(store_url, "anyone at all", "people", "--add", "kim@example.com", auth="off")
    assert done.returncode == 0, done.stderr
    assert cli(store_url, "anyone at all", "people", auth="off").returncode == 0
