"""The role × operation matrix: every public ``KPIStore`` method, called for real by a
viewer, a runner, an editor and an admin with sign-in on, on SQLite and PostgreSQL.

Each method has a rule (``@allowed``) or says why it needs none (``@unguarded``); a new
public method without a case here fails ``test_every_public_method_has_a_rule_and_a_case``.
A call below the rule's role raises ``PermissionDeniedError`` and leaves a ``DENIED``
audit entry naming the person and the method; a call at or above it succeeds.
"""

from __future__ import annotations

import importlib
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from access_world import (
    BOSS,
    ROLES,
    Case,
    World,
    archived,
    auth_settings,
    csv_file,
    email,
    names,
    spare_person,
    spare_source,
    updated_twice,
)
from conftest import make_spec

from kpi_store import KPIStore, PermissionDeniedError, Role
from kpi_store.access import rule_of


@pytest.fixture()
def world(store_url: str, source_db: Path, tmp_path: Path) -> Iterator[World]:
    store = KPIStore(store_url, settings=auth_settings(store_url))
    other_db = tmp_path / "other.db"
    shutil.copy(source_db, other_db)
    store.add_data_source("shop", f"sqlite:///{source_db}", BOSS)
    store.add_data_source("other", f"sqlite:///{other_db}", BOSS)
    for role in ROLES:
        store.add_person(email(role), BOSS, display_name=f"{role.title()} Person", role=role)
    store.add_person("scoped@example.com", BOSS, role=Role.EDITOR, data_sources=["other"])
    kpi = store.create_kpi(make_spec(), BOSS)
    store.update_kpi(kpi.id, {"description": "Second version"}, BOSS, expected_version=1)
    other = store.create_kpi(make_spec(name="Other revenue", data_source="other"), BOSS)
    run = store.execute(kpi.id, actor=BOSS)
    batch = store.execute_batch([kpi.id], actor=BOSS).batch_id
    try:
        yield World(store, tmp_path, kpi.id, other.id, run.id, batch)
    finally:
        store.close()


CASES: dict[str, Case] = {
    # data sources
    "add_data_source": Case(
        lambda w, a, _: w.store.add_data_source(
            f"new{next(names)}", f"sqlite:///{w.folder / 'source.db'}", a
        )
    ),
    "remove_data_source": Case(
        lambda w, a, name: w.store.remove_data_source(name, a), spare_source
    ),
    "data_sources": Case(lambda w, a, _: w.store.data_sources(actor=a)),
    "data_source": Case(lambda w, a, _: w.store.data_source("shop", actor=a)),
    "source_schema": Case(lambda w, a, _: w.store.source_schema("shop", actor=a)),
    # definitions
    "validate_kpi": Case(lambda w, a, _: w.store.validate_kpi(make_spec(), actor=a)),
    "create_kpi": Case(lambda w, a, _: w.store.create_kpi(make_spec(name=f"N{next(names)}"), a)),
    "update_kpi": Case(
        lambda w, a, k: w.store.update_kpi(k, {"description": "x"}, a, expected_version=1),
        lambda w: w.fresh_kpi(),
    ),
    "archive_kpi": Case(lambda w, a, k: w.store.archive_kpi(k, a), lambda w: w.fresh_kpi()),
    "unarchive_kpi": Case(lambda w, a, k: w.store.unarchive_kpi(k, a), archived),
    "delete_kpi": Case(lambda w, a, k: w.store.delete_kpi(k, a), lambda w: w.fresh_kpi()),
    "get_kpi": Case(lambda w, a, _: w.store.get_kpi(w.kpi, actor=a)),
    "list_kpis": Case(lambda w, a, _: w.store.list_kpis(actor=a)),
    "kpi_versions": Case(lambda w, a, _: w.store.kpi_versions(w.kpi, actor=a)),
    "diff_versions": Case(lambda w, a, _: w.store.diff_versions(w.kpi, 1, 2, actor=a)),
    "restore_version": Case(lambda w, a, k: w.store.restore_version(k, 1, a), updated_twice),
    # running
    "execute": Case(lambda w, a, _: w.store.execute(w.kpi, actor=a)),
    "execute_batch": Case(lambda w, a, _: w.store.execute_batch([w.kpi], actor=a)),
    "submit": Case(lambda w, a, _: w.store.submit(w.kpi, actor=a)),
    "submit_batch": Case(lambda w, a, _: w.store.submit_batch([w.kpi], actor=a)),
    # someone else's run: only an admin (a runner's own run: test_a_runner_cancels_...)
    "cancel": Case(lambda w, a, r: w.store.cancel(r, a), World.queued_run, least=Role.ADMIN),
    "execution": Case(lambda w, a, _: w.store.execution(w.run, actor=a)),
    "executions": Case(lambda w, a, _: w.store.executions(actor=a)),
    "latest_runs": Case(lambda w, a, _: w.store.latest_runs(actor=a)),
    "runs": Case(lambda w, a, _: w.store.runs([w.run], actor=a)),
    "batch_progress": Case(lambda w, a, _: w.store.batch_progress(w.batch, actor=a)),
    "failed_rerun": Case(lambda w, a, _: w.store.failed_rerun(w.batch, actor=a)),
    "job_board": Case(lambda w, a, _: w.store.job_board(actor=a)),
    "preview_query": Case(
        lambda w, a, _: w.store.preview_query("shop", "SELECT COUNT(*) AS n FROM sales", actor=a)
    ),
    # results and exports
    "result_page": Case(lambda w, a, _: w.store.result_page(w.run, actor=a)),
    "result_frame": Case(lambda w, a, _: w.store.result_frame(w.run, actor=a)),
    "export_link": Case(lambda w, a, _: w.store.export_link(w.run, a)),
    "export_csv": Case(
        lambda w, a, _: w.store.export_csv(w.run, w.folder / f"out{next(names)}.csv", a)
    ),
    "export_file": Case(
        lambda w, a, _: w.store.export_file(
            w.run, w.folder / f"out{next(names)}.xlsx", a, format="xlsx"
        )
    ),
    "page_csv": Case(lambda w, a, _: w.store.page_csv(w.run, actor=a)),
    "diff_runs": Case(lambda w, a, _: w.store.diff_runs(w.run, w.run, ["revenue"], actor=a)),
    "diff_page": Case(
        lambda w, a, _: w.store.diff_page(w.run, w.run, ["revenue"], "changed", actor=a)
    ),
    "export_diff_csv": Case(
        lambda w, a, _: w.store.export_diff_csv(
            w.run, w.run, "revenue", w.folder / f"diff{next(names)}.csv", a
        )
    ),
    # demo and uploads
    "install_demo": Case(lambda w, a, _: w.store.install_demo(a)),
    "import_csv": Case(
        lambda w, a, path: w.store.import_csv("shop", f"t{next(names)}", path, a), csv_file
    ),
    "upload_targets": Case(lambda w, a, _: w.store.upload_targets(actor=a)),
    # audit
    "audit_log": Case(lambda w, a, _: w.store.audit_log(actor=a)),
    "verify_audit": Case(lambda w, a, _: w.store.verify_audit(actor=a)),
    "audit_checkpoint": Case(lambda w, a, _: w.store.audit_checkpoint(actor=a)),
    "audit_csv": Case(lambda w, a, _: w.store.audit_csv([], actor=a)),
    # people (``person`` of someone else: an admin; oneself: test_anyone_may_look_...)
    "people": Case(lambda w, a, _: w.store.people(actor=a)),
    "person": Case(lambda w, a, _: w.store.person(BOSS, actor=a), least=Role.ADMIN),
    "add_person": Case(lambda w, a, _: w.store.add_person(f"p{next(names)}@example.com", a)),
    "update_person": Case(
        lambda w, a, who: w.store.update_person(who, a, role=Role.RUNNER), spare_person
    ),
}

# Public methods with no rule, each with the test that covers it.
UNGUARDED = {
    "close": "the fixtures close every store",
    "on_run_finished": "tests/test_runs.py: hooks",
    "rag_counts": "tests/test_views.py: computed from its arguments",
    "total_pages": "tests/test_views.py: computed from its arguments",
    "demo_warehouse_path": "tests/test_demo_warehouse.py",
    "open_export": "test_an_export_link_is_checked_again_when_redeemed",
    "sign_in": "tests/test_people.py",
}


# Newer parts of the store keep their cases beside their tests (tests/access_cases_*.py).
for _module in sorted(Path(__file__).parent.glob("access_cases_*.py")):
    _cases = importlib.import_module(_module.stem)
    CASES.update(_cases.CASES)
    UNGUARDED.update(getattr(_cases, "UNGUARDED", {}))


def public_methods() -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(KPIStore, inspect.isfunction)
        if not name.startswith("_")
    }


def test_every_public_method_has_a_rule_and_a_case() -> None:
    methods = public_methods()
    no_rule = [n for n, m in methods.items() if rule_of(m) is None and n not in UNGUARDED]
    assert not no_rule, f"public methods with neither @allowed nor a reason here: {no_rule}"
    unexplained = [n for n in UNGUARDED if not getattr(methods[n], "__unguarded__", "")]
    assert not unexplained, f"@unguarded(reason) missing on {unexplained}"
    guarded = {n for n, m in methods.items() if rule_of(m) is not None}
    assert guarded == set(CASES), (
        f"no case for {sorted(guarded - set(CASES))}; stale cases {sorted(set(CASES) - guarded)}"
    )


def least_role(name: str) -> Role:
    rule = rule_of(public_methods()[name])
    assert rule is not None
    return CASES[name].least or rule.role


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_role_matrix(world: World, name: str) -> None:
    case, least = CASES[name], least_role(name)
    for role in ROLES:
        target = case.prepare(world)
        actor = email(role)
        if role.includes(least):
            case.call(world, actor, target)
            continue
        with pytest.raises(PermissionDeniedError) as refused:
            case.call(world, actor, target)
        assert name in str(refused.value) and refused.value.operation == name
        [denied] = world.store.audit_log(action="DENIED", limit=1, actor=BOSS)
        assert (denied.actor, denied.details["operation"]) == (actor, name), role


def test_a_refusal_changes_nothing(world: World) -> None:
    before = world.store.audit_log(limit=None, actor=BOSS)
    with pytest.raises(PermissionDeniedError):
        world.store.delete_kpi(world.kpi, email(Role.EDITOR))
    with pytest.raises(PermissionDeniedError):
        world.store.update_kpi(
            world.kpi, {"sql": "SELECT 1 AS x"}, email(Role.RUNNER), expected_version=2
        )
    after = world.store.audit_log(limit=None, actor=BOSS)
    assert [e.action for e in after[: len(after) - len(before)]] == ["DENIED", "DENIED"]
    kpi = world.store.get_kpi(world.kpi, actor=BOSS)
    assert (kpi.version, kpi.description) == (2, "Second version")
    [denied] = world.store.audit_log(action="DENIED", limit=1, actor=BOSS)
    assert denied.kpi_id == world.kpi and "editor role" in denied.details["reason"]


# -- who may act at all ---------------------------------------------------------------------


def test_unknown_nameless_and_deactivated_people_are_refused(world: World) -> None:
    store = world.store
    with pytest.raises(PermissionDeniedError, match="stranger@example.com is not a known"):
        store.list_kpis(actor="Stranger@Example.com")
    with pytest.raises(PermissionDeniedError, match="only a known person"):
        store.list_kpis()
    with pytest.raises(PermissionDeniedError, match="only a known person"):
        store.create_kpi(make_spec(name="Typed name"), "Alice")
    store.update_person(email(Role.EDITOR), BOSS, active=False)
    with pytest.raises(PermissionDeniedError, match="deactivated"):
        store.get_kpi(world.kpi, actor=email(Role.EDITOR))
    actors = {e.actor for e in store.audit_log(action="DENIED", limit=None, actor=BOSS)}
    assert {"stranger@example.com", "(nobody)", "Alice", email(Role.EDITOR)} <= actors


def test_a_role_change_holds_at_the_next_call(world: World) -> None:
    runner = email(Role.RUNNER)
    world.store.execute(world.kpi, actor=runner)
    world.store.update_person(runner, BOSS, role=Role.VIEWER)
    with pytest.raises(PermissionDeniedError, match="runner role"):
        world.store.execute(world.kpi, actor=runner)
    world.store.update_person(runner, BOSS, role=Role.EDITOR)
    world.store.create_kpi(make_spec(name="Promoted"), runner)


def test_email_case_does_not_matter(world: World) -> None:
    kpi = world.store.create_kpi(make_spec(name="Cased"), "Editor@EXAMPLE.com")
    assert kpi.created_by == email(Role.EDITOR)


# -- runs: own runs, runs queued before a demotion -------------------------------------------


def test_a_runner_cancels_their_own_runs_only_and_an_admin_anyones(world: World) -> None:
    store, runner = world.store, email(Role.RUNNER)
    store.add_person("runner2@example.com", BOSS, role=Role.RUNNER)
    mine = store.submit(world.kpi, actor=runner).id
    theirs = store.submit(world.kpi, actor="runner2@example.com").id
    assert store.cancel(mine, runner).status == "cancelled"
    with pytest.raises(PermissionDeniedError, match="only they or an admin"):
        store.cancel(theirs, runner)
    assert store.cancel(theirs, email(Role.ADMIN)).status == "cancelled"


def test_a_run_queued_before_a_demotion_does_not_start(world: World) -> None:
    store, runner = world.store, email(Role.RUNNER)
    queued = store.submit(world.kpi, actor=runner).id
    store.update_person(runner, BOSS, role=Role.VIEWER)
    holder = "test-worker"
    assert store.queue.claim(holder) == queued
    store.queue.run(queued, holder)
    run = store.execution(queued, actor=BOSS)
    assert run.status == "failed" and run.row_count is None
    assert run.error is not None and run.error.startswith("Not started: Not allowed (start_run)")
    [denied] = store.audit_log(action="DENIED", limit=1, actor=BOSS)
    assert (denied.actor, denied.details["operation"]) == (runner, "start_run")


def test_a_run_queued_by_someone_deactivated_since_does_not_start(world: World) -> None:
    store, editor = world.store, email(Role.EDITOR)
    queued = store.submit(world.kpi, actor=editor).id
    store.update_person(editor, BOSS, active=False)
    assert store.queue.claim("w") == queued
    store.queue.run(queued, "w")
    run = store.execution(queued, actor=BOSS)
    assert run.status == "failed" and "deactivated" in (run.error or "")


def test_an_export_link_is_checked_again_when_redeemed(world: World) -> None:
    store, runner = world.store, email(Role.RUNNER)
    grant = store.export_link(world.run, runner)
    store.update_person(runner, BOSS, role=Role.VIEWER)
    with pytest.raises(PermissionDeniedError, match="open_export"):
        store.open_export(grant.token)
    store.update_person(runner, BOSS, role=Role.RUNNER)
    fresh = store.export_link(world.run, runner)
    _grant, chunks = store.open_export(fresh.token)
    assert "".join(chunks).count("\n") == 1 + (
        store.execution(world.run, actor=BOSS).row_count or 0
    )


# -- data-source scope ------------------------------------------------------------------------


def test_a_scoped_person_sees_and_changes_only_kpis_on_their_sources(world: World) -> None:
    store, scoped = world.store, "scoped@example.com"
    assert [k.id for k in store.list_kpis(actor=scoped)] == [world.other_kpi]
    assert [s.name for s in store.data_sources(actor=scoped)] == ["other"]
    run = store.execute(world.other_kpi, actor=scoped)
    assert [r.id for r in store.executions(actor=scoped)] == [run.id]
    assert list(store.latest_runs(actor=scoped)) == [world.other_kpi]
    assert {e.kpi_id for e in store.audit_log(actor=scoped, limit=None)} == {world.other_kpi}
    assert store.runs([world.run, run.id], actor=scoped) == [run]
    assert [r.id for r in store.job_board(actor=scoped).recent] == [run.id]
    refusals = [
        lambda: store.get_kpi(world.kpi, actor=scoped),
        lambda: store.execute(world.kpi, actor=scoped),
        lambda: store.execution(world.run, actor=scoped),
        lambda: store.result_page(world.run, actor=scoped),
        lambda: store.create_kpi(make_spec(name="On shop"), scoped),
        lambda: store.update_kpi(
            world.other_kpi, {"data_source": "shop"}, scoped, expected_version=1
        ),
        lambda: store.preview_query("shop", "SELECT 1 AS x", actor=scoped),
        lambda: store.submit_batch([world.other_kpi, world.kpi], actor=scoped),
        # comparing runs: both runs are checked, the second one too
        lambda: store.diff_runs(run.id, world.run, ["revenue"], actor=scoped),
        lambda: store.diff_page(run.id, world.run, ["revenue"], "changed", actor=scoped),
        lambda: store.export_diff_csv(run.id, world.run, "revenue", world.folder / "d.csv", scoped),
    ]
    for refused in refusals:
        with pytest.raises(PermissionDeniedError, match="data source shop"):
            refused()
    assert store.get_kpi(world.other_kpi, actor=scoped).version == 1
    assert store.diff_runs(run.id, run.id, ["revenue"], actor=scoped).identical


def test_below_admin_the_audit_log_shows_only_entries_about_visible_kpis(world: World) -> None:
    viewer = email(Role.VIEWER)
    seen = world.store.audit_log(actor=viewer, limit=None)
    assert seen and all(e.kpi_id is not None for e in seen)
    everything = world.store.audit_log(actor=BOSS, limit=None)
    assert {"PERSON_ADD", "DATA_SOURCE_ADD"} <= {e.action for e in everything}


def test_a_person_looks_themselves_up_but_not_others(world: World) -> None:
    viewer = email(Role.VIEWER)
    assert world.store.person("VIEWER@example.com", actor=viewer).role == Role.VIEWER
    with pytest.raises(PermissionDeniedError):
        world.store.person(email(Role.EDITOR), actor=viewer)


# -- sign-in off: the demo mode checks nothing -----------------------------------------------


def test_with_sign_in_off_any_name_may_do_anything(store: KPIStore) -> None:
    assert not store.settings.auth_on
    kpi = store.create_kpi(make_spec(), "Just A Name")
    store.execute(kpi.id, actor="someone else")
    store.delete_kpi(kpi.id, "a third name")
    assert store.audit_log(action="DENIED") == []
