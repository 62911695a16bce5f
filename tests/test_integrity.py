"""Containment of what is stored: encrypted credentials, an audit log that cannot be quietly
cut or rewritten, definitions that must match their trail, and runs of dead processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from job_helpers import ENDLESS, slow_kpi, wait_for, wait_running_with_rows

from kpi_store import DataSourceError, KPIStore, db
from kpi_store.audit import legacy_hash
from kpi_store.config import Settings
from kpi_store.integrity import append_checkpoint
from kpi_store.schema import kpi_audit_log as audit_table
from kpi_store.schema import kpi_store_meta

REPO = Path(__file__).resolve().parent.parent


def _sql(store: KPIStore, statement: str, **params: Any) -> None:
    """An attacker (or a careless admin) with write access to the store's database."""
    with store.engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def _with_entries(store: KPIStore, kpi_spec: Callable[..., dict[str, Any]], edits: int) -> int:
    kpi = store.create_kpi(kpi_spec(), "ann")
    for n in range(edits):
        kpi = store.update_kpi(kpi.id, {"target": 100.0 + n}, "ann", kpi.version)
    return kpi.id


# -- credentials --------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_the_generated_key_file_is_owner_only_and_reused(tmp_path: Path) -> None:
    settings = Settings(url=f"sqlite:///{tmp_path}/store.db")  # defaults, not the environment
    with KPIStore(settings=settings):
        pass
    key_file = tmp_path / "kpi_secret.key"  # beside the store
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_text()
    with KPIStore(settings=settings):  # a second process or a restart uses the same key
        pass
    assert key_file.read_text() == before and len(before.strip()) >= 40


def test_credentials_stored_in_clear_are_encrypted_when_the_store_opens(
    store_url: str, store: KPIStore, source_db: Path
) -> None:
    url = f"sqlite://user:pa55word@/{source_db}"
    _sql(
        store,
        "INSERT INTO data_sources (name, url, created_at, created_by) "
        "VALUES ('legacy', :url, :now, 'old')",
        url=url,
        now=db.utcnow(),
    )
    with KPIStore(store_url, settings=store.settings) as reopened:
        with reopened.engine.connect() as connection:
            stored = connection.execute(
                sa.text("SELECT url, display_url FROM data_sources WHERE name = 'legacy'")
            ).one()
        assert "pa55word" not in stored.url and stored.url.startswith("fernet:")
        assert stored.display_url == f"sqlite://user:***@/{source_db}"
        kpi = reopened.create_kpi(
            {"name": "Legacy", "data_source": "legacy", "sql": "SELECT count(*) AS n FROM sales"},
            "ann",
        )
        assert reopened.execute(kpi.id, actor="ann").value == 48


def test_another_key_cannot_read_the_credentials(
    store_url: str, store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    kpi = store.create_kpi(kpi_spec(), "ann")
    other = store.settings.replace(secret_key="a different key of enough length")
    with KPIStore(store_url, settings=other) as stranger:
        with pytest.raises(DataSourceError, match="cannot be decrypted"):
            stranger.preview_query("shop", "SELECT 1 AS one", actor="tester")
        run = stranger.execute(kpi.id, actor="ann")
        assert run.status == "failed" and "cannot be decrypted" in (run.error or "")


# -- the audit chain ----------------------------------------------------------------------


def test_an_edit_with_recomputed_unkeyed_hashes_is_detected(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    _with_entries(store, kpi_spec, edits=3)
    with store.engine.begin() as connection:  # rewrite entry 2, re-hash it and the rest
        rows = connection.execute(sa.select(audit_table).order_by(audit_table.c.id)).all()
        prev = rows[0].entry_hash
        for row in rows[1:]:
            actor = "mallory" if row.id == rows[1].id else row.actor
            forged = SimpleNamespace(**{**row._mapping, "actor": actor, "prev_hash": prev})
            forged_hash = legacy_hash(forged)  # SHA-256, the best one can do without the key
            connection.execute(
                audit_table.update()
                .where(audit_table.c.id == row.id)
                .values(actor=actor, prev_hash=prev, entry_hash=forged_hash)
            )
            prev = forged_hash

    result = store.verify_audit()

    assert not result.ok and result.first_broken_id == rows[1].id
    assert "signature does not match" in result.reason


def test_removing_entries_that_later_ones_follow_is_detected(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    _with_entries(store, kpi_spec, edits=4)
    _sql(store, "DELETE FROM kpi_audit_log WHERE seq IN (2, 3)")
    # Even relinking the next entry to the one before the hole is caught (no key).
    _sql(
        store,
        "UPDATE kpi_audit_log SET prev_hash = (SELECT entry_hash FROM kpi_audit_log WHERE seq = 1)"
        " WHERE seq = 4",
    )

    result = store.verify_audit()

    assert not result.ok
    assert result.reason.startswith("entries 2 to 3 are missing: removed before entry")


def test_cutting_the_newest_entries_is_detected_against_a_checkpoint(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    kpi_id = _with_entries(store, kpi_spec, edits=4)
    for _ in range(2):  # the newest entries record runs: cutting them hides who ran what
        store.execute(kpi_id, actor="ann")
    checkpoint = store.audit_checkpoint()
    count = checkpoint.count
    assert count == len(store.audit_log(limit=None))
    _sql(store, "DELETE FROM kpi_audit_log WHERE seq >= :cut", cut=count - 1)

    assert store.verify_audit(checkpoint=None).ok  # without an anchor: undetectable
    result = store.verify_audit(checkpoint=checkpoint)

    assert not result.ok
    assert f"entries {count - 1} to {count} of the audit log are missing" in result.reason


def test_wiping_the_table_is_detected_and_a_forged_checkpoint_is_refused(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    _with_entries(store, kpi_spec, edits=1)
    checkpoint = store.audit_checkpoint()
    forged = checkpoint.model_copy(update={"count": 1})
    _sql(store, "DELETE FROM kpi_audit_log")

    wiped = store.verify_audit(checkpoint)
    assert f"entries 1 to {checkpoint.count} of the audit log are missing" in wiped.reason
    assert "signature does not match" in store.verify_audit(forged).reason


def test_the_cli_verifies_against_the_newest_checkpoint_in_the_file(
    store_url: str, store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    _with_entries(store, kpi_spec, edits=2)
    written = store.checkpoints.write_if_due()
    assert written is not None
    _sql(store, "DELETE FROM kpi_audit_log WHERE seq = :newest", newest=written.count)
    env = {**os.environ, "KPI_STORE_URL": store_url}

    result = subprocess.run(
        [sys.executable, "-m", "kpi_store", "audit", "--verify"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1, result.stderr
    assert f"entry {written.count} of the audit log is missing" in result.stdout
    assert f"checkpoint vouches for {written.count} entries" in result.stdout


def test_checkpoints_are_written_hourly_or_every_thousand_entries(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    writer = store.checkpoints
    first = writer.write_if_due()
    assert first is not None and writer.write_if_due() is None  # nothing new yet
    kpi_id = _with_entries(store, kpi_spec, edits=0)
    for _ in range(1_000):
        store.export_csv(store.execute(kpi_id, actor="ann").id, os.devnull, "ann")
        if writer.write_if_due() is not None:
            break
    lines = writer.path.read_text().splitlines()
    assert len(lines) == 2
    second = store.verify_audit()  # the file's newest checkpoint is used by default
    assert second.ok and second.checkpoint_count is not None
    assert second.checkpoint_count - first.count >= 1_000
    old = first.model_copy(update={"created_at": first.created_at.replace(year=2000)})
    append_checkpoint(writer.path, old)  # an hour (and more) has passed since the last one
    writer._last = old
    assert writer.write_if_due() is not None


def test_a_chain_written_before_keying_is_signed_once_and_a_legacy_break_is_kept(
    store_url: str, store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    _with_entries(store, kpi_spec, edits=2)
    with store.engine.begin() as connection:  # make it look like a pre-keying store
        connection.execute(kpi_store_meta.delete())
        prev = "0" * 64
        for row in connection.execute(sa.select(audit_table).order_by(audit_table.c.id)).all():
            legacy = legacy_hash(SimpleNamespace(**{**row._mapping, "prev_hash": prev}))
            connection.execute(
                audit_table.update()
                .where(audit_table.c.id == row.id)
                .values(prev_hash=prev, entry_hash=legacy, seq=None)
            )
            prev = legacy
    _sql(store, "UPDATE kpi_audit_log SET actor = 'mallory' WHERE id = 2")  # an old forgery

    with KPIStore(store_url, settings=store.settings) as reopened:
        result = reopened.verify_audit()
        assert not result.ok
        assert "before the chain was keyed, entry 2 did not fit" in result.reason
        assert result.first_broken_id is None  # the re-signed chain itself is whole
        reopened.create_kpi(kpi_spec(name="After keying"), "ann")  # the chain goes on
        assert reopened.verify_audit().problems == [result.reason]


# -- definitions against their trail ------------------------------------------------------


def test_a_direct_edit_of_a_definition_is_reported(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    kpi_id = _with_entries(store, kpi_spec, edits=1)
    assert store.verify_audit().ok
    _sql(store, "UPDATE kpi_definitions SET target = 1 WHERE id = :id", id=kpi_id)

    result = store.verify_audit()

    assert not result.ok
    assert f"KPI {kpi_id}: its current definition differs from its newest saved version" in (
        result.problems
    )
    assert any("differs from what the audit log recorded" in p for p in result.problems)


def test_editing_the_history_too_is_still_caught_by_the_audit_trail(
    store: KPIStore, kpi_spec: Callable[..., dict[str, Any]]
) -> None:
    kpi_id = _with_entries(store, kpi_spec, edits=0)
    forged = store.get_kpi(kpi_id).spec().model_copy(update={"sql": "SELECT 1 AS revenue"})
    _sql(store, "UPDATE kpi_definitions SET sql = 'SELECT 1 AS revenue' WHERE id = :id", id=kpi_id)
    _sql(
        store,
        "UPDATE kpi_definition_history SET definition = :d WHERE kpi_id = :id",
        d=forged.model_dump_json(),
        id=kpi_id,
    )

    result = store.verify_audit()

    assert [p for p in result.problems if f"KPI {kpi_id}" in p] == [
        f"KPI {kpi_id}: its current definition differs from what the audit log recorded "
        "(changed outside KPI Desk?)"
    ]


# -- crash safety -------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_a_run_now_whose_process_was_killed_ends_failed_when_a_store_opens(
    store_url: str, store: KPIStore, tmp_path: Path
) -> None:
    kpi = slow_kpi(store)
    script = tmp_path / "run_now.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from kpi_store import KPIStore
            store = KPIStore({store_url!r})
            store.execute({kpi.id}, {ENDLESS!r}, actor="ann", timeout_s=600)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env)
    try:
        wait_for(lambda: store.executions(limit=1), 30, "the run to be recorded")
        run = wait_running_with_rows(store, store.executions(limit=1)[0].id)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    time.sleep(0.6)  # its heartbeat goes stale (timeout below)

    with KPIStore(store_url, settings=Settings(url=store_url, heartbeat_timeout_s=0.5)):
        pass  # opening a store is enough; no worker runs

    lost = store.execution(run.id)
    assert (lost.status, lost.error) == (
        "failed",
        "The process running it stopped before it finished.",
    )
    assert lost.requeue_count == 0  # not re-run in the background behind the person's back
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT count(*) FROM kpi_execution_result_rows WHERE execution_id = :id"),
            {"id": run.id},
        ).scalar_one()
    assert rows == 0
