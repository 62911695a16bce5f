"""Store helpers the dashboard leans on: RAG status, latest runs per KPI, small CSVs."""

from __future__ import annotations

import csv
import io

import pytest

from kpi_store import ValidationError


def test_rag_status_follows_direction_and_tolerance(store, kpi_spec):
    higher = store.create_kpi(kpi_spec(target=100.0, tolerance_pct=10), "ann")
    lower = store.create_kpi(
        kpi_spec(name="Returns", target=10.0, direction="lower_is_better", tolerance_pct=20),
        "ann",
    )
    assert [higher.rag_status(v) for v in (120, 100, 95, 90, 89.9)] == [
        "green",
        "green",
        "amber",
        "amber",
        "red",
    ]
    assert [lower.rag_status(v) for v in (5, 10, 12, 12.1)] == ["green", "green", "amber", "red"]
    assert higher.rag_status(None) == "no_data"  # no rows or NULL: no data, never red
    untargeted = store.create_kpi(kpi_spec(name="No target", target=None), "ann")
    assert untargeted.rag_status(50) is None


def test_latest_runs_gives_each_kpi_its_newest_runs_in_one_call(store, kpi_spec):
    first = store.create_kpi(kpi_spec(), "ann")
    second = store.create_kpi(kpi_spec(name="Other"), "ann")
    quiet = store.create_kpi(kpi_spec(name="Never run"), "ann")
    for _ in range(3):
        store.execute(first.id, actor="ann")
    store.execute(second.id, actor="ann")

    latest = store.latest_runs([first.id, second.id, quiet.id], per_kpi=2)

    assert set(latest) == {first.id, second.id}
    assert [r.id for r in latest[first.id]] == [
        r.id for r in store.executions(kpi_id=first.id, limit=2)
    ]
    assert len(latest[second.id]) == 1
    assert set(store.latest_runs(per_kpi=1)) == {first.id, second.id}


def test_page_csv_holds_exactly_that_page(store, kpi_spec):
    kpi = store.create_kpi(
        kpi_spec(
            name="Rows",
            sql="SELECT id, region, amount FROM sales WHERE sold_on >= :start "
            "AND region <> :region ORDER BY id",
            value_column="amount",
        ),
        "ann",
    )
    run = store.execute(kpi.id, actor="ann")
    page = store.result_page(run.id, page=2, page_size=10)

    rows = list(
        csv.reader(io.StringIO(store.page_csv(run.id, 2, 10, actor="tester").decode("utf-8")))
    )

    assert rows[0] == ["id", "region", "amount"]
    assert rows[1:] == [[str(v) for v in row] for row in page.rows]
    with pytest.raises(ValidationError):
        store.page_csv(run.id, 99, 10, actor="tester")


def test_audit_csv_lists_the_given_entries(store, kpi_spec):
    store.create_kpi(kpi_spec(), "ann")
    entries = store.audit_log(person="ann")

    data = store.audit_csv(entries, actor="tester")

    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0][:4] == ["id", "occurred_at", "actor", "action"]
    assert [(r[2], r[3]) for r in rows[1:]] == [("ann", "CREATE")]
