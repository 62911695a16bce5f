"""The run's life in one place: every way a run ends is recorded once, audited, announced."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from job_helpers import age_heartbeat

from kpi_store import Execution, KPIStore, RunStatus, ValidationError, db
from kpi_store.errors import LostOwnership
from kpi_store.queue import new_holder
from kpi_store.schema import kpi_execution_results as executions
from kpi_store.validation import bind_parameters, stored_parameters


@pytest.fixture()
def heard(store: KPIStore) -> list[Execution]:
    """Every run the store announces as finished, in order."""
    finished: list[Execution] = []
    lock = threading.Lock()

    def hear(execution: Execution) -> None:
        with lock:
            finished.append(execution)

    store.on_run_finished(hear)
    return finished


def _execute_entries(store: KPIStore, execution_id: int) -> list[Any]:
    return [
        e
        for e in store.audit_log(action="EXECUTE", limit=None)
        if e.entity == f"execution:{execution_id}"
    ]


def test_a_successful_and_a_failed_run_are_each_announced_once(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], heard: list[Execution]
) -> None:
    good = store.create_kpi(kpi_spec(name="Good"), "ann")
    bad = store.create_kpi(
        kpi_spec(
            name="Bad", sql="SELECT no_such_function(1) AS x", parameters=[], value_column=None
        ),
        "ann",
    )

    ok = store.execute(good.id, actor="ann")
    failed = store.execute(bad.id, actor="ann")

    assert [(e.id, e.status) for e in heard] == [(ok.id, "success"), (failed.id, "failed")]
    assert heard[0] == ok  # hooks see the run exactly as recorded
    assert len(_execute_entries(store, ok.id)) == len(_execute_entries(store, failed.id)) == 1


def test_cancelling_a_queued_run_announces_it(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], heard: list[Execution]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    queued = store.submit(kpi.id, actor="ann")

    store.cancel(queued.id, "bob")

    assert [(e.id, e.status) for e in heard] == [(queued.id, "cancelled")]


def test_a_run_that_cannot_be_loaded_ends_failed_with_its_audit_entry(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], heard: list[Execution]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    queued = store.submit(kpi.id, actor="ann")
    with db.write_tx(store.engine) as connection:  # data set-up: a version that is gone
        connection.execute(
            executions.update().where(executions.c.id == queued.id).values(kpi_version=99)
        )
    holder = new_holder("test-worker")
    assert store.queue.claim(holder) == queued.id

    store.queue.run(queued.id, holder)

    run = store.execution(queued.id)
    assert run.status == "failed" and "no version 99" in (run.error or "")
    [entry] = _execute_entries(store, queued.id)
    assert (entry.actor, entry.details["status"]) == ("ann", "failed")
    assert entry.details["error"] == run.error
    assert [e.id for e in heard] == [queued.id]


def test_recovery_that_ends_a_run_audits_and_announces_it_but_a_requeue_does_not(
    store_url: str, store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], heard: list[Execution]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    queued = store.submit(kpi.id, actor="ann")

    for life, expected in enumerate((RunStatus.PENDING, RunStatus.FAILED), start=1):
        assert store.queue.claim(f"ghost-{life}") == queued.id
        age_heartbeat(store, queued.id)
        assert store.queue.recover() == [queued.id]
        assert store.execution(queued.id).status == expected

    assert [(e.id, e.status, e.error) for e in heard] == [(queued.id, "failed", "worker lost")]
    assert len(_execute_entries(store, queued.id)) == 1


def test_release_hands_a_claimed_run_back_and_the_old_holder_cannot_write(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], heard: list[Execution]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    queued = store.submit(kpi.id, actor="ann")
    holder = new_holder("test-worker")
    assert store.queue.claim(holder) == queued.id
    store.ledger.held(queued.id, holder).store(1, ["[1]", "[2]"], 2)

    store.queue.release(queued.id, holder)

    back = store.execution(queued.id)
    assert (back.status, back.worker_id, back.rows_read, back.started_at) == (
        "pending",
        None,
        0,
        None,
    )
    with pytest.raises(LostOwnership):
        store.ledger.held(queued.id, holder).record_attempt(1)
    assert heard == []  # going back to the queue is not an end


def test_a_failing_hook_never_changes_the_run(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], heard: list[Execution]
) -> None:
    def broken(_execution: Execution) -> None:
        raise RuntimeError("subscriber bug")

    store.on_run_finished(broken)
    kpi = store.create_kpi(kpi_spec(), "ann")

    run = store.execute(kpi.id, actor="ann")

    assert run.status == "success"
    assert [e.id for e in heard] == [run.id]  # hooks after the broken one still hear it


def test_parameters_are_bound_once_into_typed_and_stored_forms(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    spec = store.validate_kpi(
        kpi_spec(
            sql="SELECT :day AS day, :n AS n",
            parameters=[
                {"name": "day", "type": "date", "default": "2025-01-31"},
                {"name": "n", "type": "int", "default": 3},
            ],
        )
    )

    bound = bind_parameters(spec, {"n": "7"})

    assert bound.json == {"day": "2025-01-31", "n": 7}
    assert str(bound.typed["day"]) == "2025-01-31" and bound.typed["n"] == 7
    assert bound.for_dialect("sqlite") == bound.json
    assert bound.for_dialect("postgresql") == bound.typed
    assert stored_parameters(spec, bound.json) == bound
    assert bind_parameters(spec, {"n": 1, "other": 2}, ignore_undeclared=True).json["n"] == 1
    with pytest.raises(ValidationError, match="Unknown parameter"):
        bind_parameters(spec, {"other": 2})
