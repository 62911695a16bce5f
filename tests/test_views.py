"""``kpi_store.views`` and the KPIStore methods over them: the rules pages used to compute
themselves (RAG counts, pages, upload targets, batch progress, re-running failures, the
job board, runs by id), checked on real stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kpi_store import KPIStore, NotFoundError, RunStatus
from kpi_store.views import page_span, total_pages


def kpi(store: KPIStore, spec: Callable[..., dict[str, Any]], **changes: Any) -> int:
    return store.create_kpi(spec(**changes), "setup").id


def test_rag_counts_and_never_run(store: KPIStore, kpi_spec) -> None:
    # Sales of "north" since 2024: 12 rows. Targets pick green, amber, red and no target.
    total = store.execute(kpi(store, kpi_spec, name="Probe"), actor="t").value
    assert total is not None
    ids = [
        kpi(store, kpi_spec, name="Green", target=total - 1),
        kpi(store, kpi_spec, name="Amber", target=total * 1.05, tolerance_pct=10),
        kpi(store, kpi_spec, name="Red", target=total * 2),
        kpi(store, kpi_spec, name="No target", target=None),
        kpi(store, kpi_spec, name="Never", target=10.0),
    ]
    for kpi_id in ids[:4]:
        store.execute(kpi_id, actor="t")
    empty = kpi(store, kpi_spec, name="Empty", target=10.0)  # SUM of no rows: NULL, no data
    store.execute(empty, actor="t", params={"start": "2100-01-01"})
    store.update_kpi(empty, {"official_params": {"start": "2100-01-01"}}, "t", expected_version=1)
    ids.append(empty)
    kpis = [store.get_kpi(i) for i in ids]
    counts = store.rag_counts(kpis, store.headlines(kpis))
    assert (counts.green, counts.amber, counts.red) == (1, 1, 1)
    assert (counts.never_run, counts.no_status, counts.no_data) == (1, 1, 1)
    assert counts["green"] == 1


def test_a_failed_newest_run_keeps_the_last_success(store: KPIStore, kpi_spec) -> None:
    kpi_id = kpi(store, kpi_spec, target=1.0)
    store.execute(kpi_id, actor="t")
    queued = store.submit(kpi_id, actor="t")
    store.cancel(queued.id, "t")
    kpis = [store.get_kpi(kpi_id)]
    counts = store.rag_counts(kpis, store.headlines(kpis))
    assert counts.green == 1 and counts.never_run == 0


@pytest.mark.parametrize(
    ("rows", "size", "pages"), [(0, 50, 1), (None, 50, 1), (1, 50, 1), (50, 50, 1), (51, 50, 2)]
)
def test_total_pages(rows: int | None, size: int, pages: int) -> None:
    assert total_pages(rows, size) == pages


def test_total_pages_of_a_run_matches_result_pages(store: KPIStore, kpi_spec) -> None:
    run = store.execute(
        kpi(
            store,
            kpi_spec,
            sql="SELECT id, amount FROM sales",
            parameters=[],
            value_column="amount",
        ),
        actor="t",
    )
    assert run.row_count == 48
    for size in (1, 7, 48, 50):
        assert store.total_pages(run, size) == store.result_page(run.id, 1, size).total_pages
    assert page_span(2, 7, 7) == (8, 14) and page_span(7, 7, 6) == (43, 48)


def test_upload_targets_are_the_sqlite_sources(store: KPIStore) -> None:
    assert store.upload_targets() == ["shop"]


def test_batch_progress_and_the_failed_rerun(store: KPIStore, kpi_spec) -> None:
    good = kpi(store, kpi_spec, name="Good")
    gone = "SELECT x FROM gone WHERE :start = :region"  # no value column: saved unchecked
    bad = kpi(store, kpi_spec, name="Bad", sql=gone, value_column=None)
    batch = store.execute_batch([good, bad], {"region": "south"}, actor="t")
    progress = store.batch_progress(batch.batch_id)
    assert progress.total == 2 and progress.done and progress.share_done == 1.0
    assert progress.succeeded == 1 and [r.kpi_id for r in progress.failed] == [bad]
    assert [r.id for r in progress.runs] == sorted(r.id for r in progress.runs)

    rerun = store.failed_rerun(batch.batch_id)
    assert rerun.kpi_ids == (bad,)
    assert rerun.params == {"start": "2024-01-01", "region": "south"}


def test_a_queued_batch_is_not_done(store: KPIStore, kpi_spec) -> None:
    batch = store.submit_batch([kpi(store, kpi_spec)], actor="t")
    progress = store.batch_progress(batch.batch_id)
    assert (progress.total, len(progress.finished), progress.done) == (1, 0, False)
    assert store.failed_rerun(batch.batch_id).kpi_ids == ()


def test_runs_by_id_in_one_call(store: KPIStore, kpi_spec) -> None:
    kpi_id = kpi(store, kpi_spec)
    first = store.execute(kpi_id, actor="t")
    second = store.submit(kpi_id, actor="t")
    assert [r.id for r in store.runs([second.id, 999_999, first.id])] == [second.id, first.id]
    assert store.runs([]) == []


def test_job_board(store: KPIStore, kpi_spec) -> None:
    listed = kpi(
        store,
        kpi_spec,
        sql="SELECT id FROM sales",
        parameters=[],
        value_column=None,
        aggregation="count",
    )
    done = store.execute(listed, actor="t")
    pending = store.submit(listed, actor="t")
    board = store.job_board()
    assert [r.id for r in board.active] == [pending.id]
    assert board.active[0].status == RunStatus.PENDING
    assert [r.id for r in board.recent] == [done.id]
    assert board.expected(pending) is None  # expected rows are looked up for running jobs
    store.cancel(pending.id, "t")
    board = store.job_board()
    assert board.active == () and {r.id for r in board.recent} == {done.id, pending.id}


def test_export_link_is_single_use_and_audited_once(store: KPIStore, kpi_spec) -> None:
    run = store.execute(
        kpi(
            store,
            kpi_spec,
            sql="SELECT id FROM sales",
            parameters=[],
            value_column=None,
            aggregation="count",
        ),
        actor="t",
    )
    grant = store.export_link(run.id, "  ana  ")
    assert grant.actor == "ana" and grant.execution_id == run.id
    assert store.audit_log(action="EXPORT") == []
    _, chunks = store.open_export(grant.token)
    text = "".join(chunks)
    assert text.splitlines()[0] == "id" and len(text.splitlines()) == 49
    [entry] = store.audit_log(action="EXPORT")
    assert entry.actor == "ana" and entry.details["rows"] == 48
    with pytest.raises(NotFoundError):
        store.open_export(grant.token)


def test_export_links_need_a_name_and_a_successful_run(store: KPIStore, kpi_spec) -> None:
    from kpi_store import ExecutionError, ValidationError

    run = store.submit(kpi(store, kpi_spec), actor="t")
    with pytest.raises(ValidationError):
        store.export_link(run.id, " ")
    with pytest.raises(ExecutionError):
        store.export_link(run.id, "ana")


def test_expired_tokens_are_refused() -> None:
    from kpi_store.export_links import ExportTokens

    now = [0.0]
    tokens = ExportTokens(ttl_s=60, clock=lambda: now[0])
    grant = tokens.issue(1, "ana", excel=False)
    now[0] = 61.0
    assert tokens.redeem(grant.token) is None
    assert tokens.redeem("unknown") is None
