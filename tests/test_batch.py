"""Batches: one KPI's failure never stops the others, and the runs share a batch id."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kpi_store import KPIStore

UNKNOWN_ID = 987_654


@pytest.fixture()
def kpis(store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]) -> dict[str, int]:
    """A good KPI with parameters, one without, and one whose SQL fails at run time."""
    good = store.create_kpi(kpi_spec(), "tester").id
    count = store.create_kpi(
        {"name": "Sales count", "data_source": "shop", "sql": "SELECT count(*) AS n FROM sales"},
        "tester",
    ).id
    broken = store.create_kpi(
        {"name": "Broken", "data_source": "shop", "sql": "SELECT SUM(amount) AS v FROM gone"},
        "tester",
    ).id
    return {"good": good, "count": count, "broken": broken}


def expected_revenue(source_db: Path, region: str) -> float:
    with sqlite3.connect(source_db) as connection:
        return connection.execute(
            "SELECT SUM(amount) FROM sales WHERE sold_on >= '2024-01-01' AND region = ?",
            (region,),
        ).fetchone()[0]


def test_batch_of_good_broken_and_unknown_kpis(
    store: KPIStore, kpis: dict[str, int], source_db: Path
) -> None:
    ids = [kpis["good"], kpis["broken"], UNKNOWN_ID, kpis["count"]]

    result = store.execute_batch(ids, actor="batcher")

    assert (result.total, result.successful, result.failed) == (4, 2, 2)
    assert len(result.executions) == 3  # the unknown KPI never got a run
    by_kpi = {run.kpi_id: run for run in result.executions}
    assert by_kpi[kpis["good"]].status == "success"
    assert by_kpi[kpis["good"]].value == pytest.approx(expected_revenue(source_db, "north"))
    assert by_kpi[kpis["count"]].value == 48.0
    assert by_kpi[kpis["broken"]].status == "failed"
    assert by_kpi[kpis["broken"]].attempts == 1

    errors = {error.kpi_id: error.message for error in result.errors}
    assert set(errors) == {kpis["broken"], UNKNOWN_ID}
    assert "no such table: gone" in errors[kpis["broken"]]
    assert str(UNKNOWN_ID) in errors[UNKNOWN_ID]

    assert result.batch_id
    assert {run.batch_id for run in result.executions} == {result.batch_id}
    stored = store.executions(batch_id=result.batch_id)
    assert sorted(run.id for run in stored) == sorted(run.id for run in result.executions)
    assert all(run.requested_by == "batcher" for run in stored)
    assert len(store.audit_log(action="EXECUTE", person="batcher")) == 3


def test_batch_params_reach_only_the_kpis_that_declare_them(
    store: KPIStore, kpis: dict[str, int], source_db: Path
) -> None:
    result = store.execute_batch(
        [kpis["good"], kpis["count"]], params={"region": "west"}, actor="batcher"
    )
    assert (result.successful, result.failed, result.errors) == (2, 0, [])
    by_kpi = {run.kpi_id: run for run in result.executions}
    assert by_kpi[kpis["good"]].params == {"start": "2024-01-01", "region": "west"}
    assert by_kpi[kpis["good"]].value == pytest.approx(expected_revenue(source_db, "west"))
    assert by_kpi[kpis["count"]].params == {}


def test_a_bad_parameter_fails_only_its_own_kpi(store: KPIStore, kpis: dict[str, int]) -> None:
    result = store.execute_batch(
        [kpis["good"], kpis["count"]], params={"region": "atlantis"}, actor="batcher"
    )
    assert (result.total, result.successful, result.failed) == (2, 1, 1)
    (error,) = result.errors
    assert error.kpi_id == kpis["good"]
    assert "atlantis" in error.message
    assert [run.kpi_id for run in result.executions] == [kpis["count"]]


def test_an_archived_kpi_in_a_batch_is_an_error_not_a_stop(
    store: KPIStore, kpis: dict[str, int]
) -> None:
    store.archive_kpi(kpis["count"], "tester")
    result = store.execute_batch([kpis["count"], kpis["good"]], actor="batcher")
    assert (result.successful, result.failed) == (1, 1)
    assert [error.kpi_id for error in result.errors] == [kpis["count"]]
    assert "archived" in result.errors[0].message


def test_every_kpi_of_a_batch_runs_even_when_all_fail(store: KPIStore) -> None:
    ids = [
        store.create_kpi(
            {"name": f"Broken {n}", "data_source": "shop", "sql": f"SELECT x FROM nope{n}"},
            "tester",
        ).id
        for n in range(6)
    ]
    result = store.execute_batch(ids, actor="batcher", max_parallel=3)
    assert (result.total, result.successful, result.failed) == (6, 0, 6)
    assert sorted(e.kpi_id for e in result.errors) == sorted(ids)
    assert all(f"nope{ids.index(e.kpi_id)}" in e.message for e in result.errors)


def test_an_empty_batch(store: KPIStore) -> None:
    result = store.execute_batch([], actor="batcher")
    assert (result.total, result.successful, result.failed) == (0, 0, 0)
    assert result.executions == [] and result.errors == []


def test_submitted_batch_queues_runs_under_one_batch_id(
    store: KPIStore, kpis: dict[str, int]
) -> None:
    result = store.submit_batch([kpis["good"], UNKNOWN_ID, kpis["count"]], actor="batcher")
    assert (result.total, result.successful, result.failed) == (3, 2, 1)
    assert {run.status for run in result.executions} == {"pending"}
    assert {run.batch_id for run in result.executions} == {result.batch_id}
    assert [error.kpi_id for error in result.errors] == [UNKNOWN_ID]
