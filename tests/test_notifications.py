"""Notifications: queued by alert rules, delivered by workers to real servers.

Each test starts the servers it talks to: an SMTP server (aiosmtpd) on a free port and an
HTTP server (http.server) that records webhook calls and answers from a script (500
first, then 200…). The webhook's HMAC signature is checked with the secret the store
handed out. Time is driven through ``deliver_due(now)``; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import make_spec

from kpi_store import KPIStore, Worker, db, delivery, notifications
from kpi_store.config import Settings
from kpi_store.errors import NotFoundError, PermissionDeniedError, ValidationError
from kpi_store.notification_records import NotificationEvent
from kpi_store.schema import webhook_channels

# The test mail server asks for a login over plain SMTP on the loopback.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
NOW = dt.datetime(2026, 3, 1, 9, 0)
SMTP_USER, SMTP_PASSWORD = "kpi", "mail-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the mail server -------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server received; ``answers`` are its replies to DATA, in turn."""

    port: int
    messages: list[tuple[list[str], EmailMessage, bool]] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.answers:
            answer = self.answers.pop(0)
            if not answer.startswith("250"):
                return answer
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed, bool(session.authenticated)))
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@pytest.fixture()
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(free_port())
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        authenticator=_authenticate,
        auth_required=True,
        auth_require_tls=False,  # the test server speaks plain SMTP on the loopback
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# -- the webhook receiver --------------------------------------------------------------------


@dataclass
class Receiver:
    """Webhook calls received (headers, body); ``answers`` are the status codes to reply."""

    url: str
    calls: list[tuple[dict[str, str], str]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Event = field(default_factory=threading.Event)

    def answer(self, headers: dict[str, str], body: str) -> int:
        with self.lock:
            self.calls.append((headers, body))
            self.arrived.set()
            return self.answers.pop(0) if self.answers else 200


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    hook = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/T123/secret-token")
    server.receiver = hook  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        status = self.server.receiver.answer(dict(self.headers), body)  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: Any) -> None:
        return None  # quiet test output


def verified(secret: str, headers: dict[str, str], body: str) -> bool:
    """What a receiver does: recompute the signature of ``timestamp.body`` (header names
    in any case, as HTTP has them)."""
    named = {name.casefold(): value for name, value in headers.items()}
    payload = f"{named['x-kpi-desk-timestamp']}.{body}".encode()
    expected = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, named["x-kpi-desk-signature"])


# -- stores and events -----------------------------------------------------------------------


def settings_for(url: str, **changes: Any) -> Settings:
    base = dict(
        url=url,
        smtp_host="",
        smtp_starttls=False,
        notify_timeout_s=5.0,
        notify_max_attempts=3,
        notify_retry_wait_s=30.0,
        public_url="https://kpi.example.com/",
    )
    return Settings.from_env().replace(**{**base, **changes})


def open_store(url: str, **changes: Any) -> KPIStore:
    store = KPIStore(url, settings=settings_for(url, **changes))
    notifications.attach(store.engine, store.settings)  # as KPIStore.__init__ will
    return store


@pytest.fixture()
def store(store_url: str) -> Iterator[KPIStore]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture()
def mail_store(store_url: str, mailbox: Mailbox) -> Iterator[KPIStore]:
    opened = open_store(
        store_url,
        smtp_host="127.0.0.1",
        smtp_port=mailbox.port,
        smtp_user=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
    )
    try:
        yield opened
    finally:
        opened.close()


def event(**changes: Any) -> NotificationEvent:
    fields: dict[str, Any] = dict(
        kind="firing",
        rule_id=3,
        rule_name="Revenue under target",
        kpi_id=5,
        kpi_name="Revenue",
        run_id=7,
        state="firing",
        value=812.5,
        target=1000.0,
        change_pct=-12.25,
        unit="EUR",
        summary="Revenue is 812.50 EUR, under its target of 1,000 EUR.",
        occurred_at=NOW,
    )
    return NotificationEvent(**{**fields, **changes})


def enqueue(
    store: KPIStore,
    what: NotificationEvent | None = None,
    people: tuple[str, ...] = (),
    webhooks: tuple[str, ...] = (),
) -> int:
    with db.write_tx(store.engine) as connection:
        return notifications.enqueue(connection, what or event(), people=people, webhooks=webhooks)


def only(store: KPIStore, channel: str) -> Any:
    [found] = [d for d in store.deliveries() if d.channel == channel]
    return found


# -- email -----------------------------------------------------------------------------------


def test_an_email_arrives_with_plain_text_html_and_the_link_and_names_escaped(
    mail_store: KPIStore, mailbox: Mailbox
) -> None:
    enqueue(mail_store, event(kpi_name="<b>x</b>"), people=("Ana@Example.com", "Bo"))
    report = mail_store.deliver_due()
    assert (report.claimed, report.sent) == (1, 1)  # Bo has no address: inbox only
    [(recipients, message, logged_in)] = mailbox.messages
    assert recipients == ["ana@example.com"] and logged_in
    assert message["Subject"] == "[KPI Desk] Alert: <b>x</b> (Revenue under target)"
    link = "https://kpi.example.com/drilldown?execution=7"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    text, markup = plain.get_content(), html.get_content()
    for expected in ("KPI: <b>x</b>", "Value: 812.50 EUR", "Target: 1,000 EUR", "-12.2%", link):
        assert expected in text
    assert "&lt;b&gt;x&lt;/b&gt;" in markup and "<b>x</b>" not in markup
    assert f'href="{link}"' in markup and "812.50 EUR" in markup
    sent = only(mail_store, "email")
    assert (sent.status, sent.attempts, [t.ok for t in sent.tries]) == ("sent", 1, [True])


def test_a_busy_mail_server_is_tried_again_and_a_refusal_is_final(
    mail_store: KPIStore, mailbox: Mailbox
) -> None:
    mailbox.answers = ["451 4.3.0 busy, try later"]
    enqueue(mail_store, people=("ana@example.com",))
    assert mail_store.deliver_due().sent == 1
    sent = only(mail_store, "email")
    assert [t.ok for t in sent.tries] == [False, True] and "451" in (sent.tries[0].error or "")
    mailbox.answers = ["550 5.1.1 no such mailbox"]
    enqueue(mail_store, people=("gone@example.com",))
    assert mail_store.deliver_due().failed == 1
    failed = mail_store.deliveries(status="failed")[0]
    assert failed.attempts == 1 and "550" in (failed.last_error or "")
    [health] = [h for h in mail_store.channel_health() if h.channel == "email"]
    assert health.configured and health.failing and "550" in (health.last_error or "")


def test_without_a_mail_server_only_the_inbox_gets_it(store: KPIStore) -> None:
    enqueue(store, people=("ana@example.com",))
    assert [d.channel for d in store.deliveries()] == ["inbox"]
    assert store.deliver_due().claimed == 0
    [health] = [h for h in store.channel_health() if h.channel == "email"]
    assert not health.configured and "KPI_SMTP_HOST" in health.detail


# -- webhooks --------------------------------------------------------------------------------


def test_a_signed_webhook_call_is_retried_after_a_500(store: KPIStore, receiver: Receiver) -> None:
    secret = store.add_webhook("team-chat", receiver.url, "admin").secret
    assert secret
    receiver.answers = [500, 200]
    notification = enqueue(store, webhooks=("team-chat",))
    report = store.deliver_due()
    assert (report.sent, report.retrying, report.failed) == (1, 0, 0)
    assert len(receiver.calls) == 2
    assert all(verified(secret, headers, body) for headers, body in receiver.calls)
    assert not verified("another secret of some length", *receiver.calls[1])
    payload = json.loads(receiver.calls[1][1])
    assert payload["notification_id"] == notification
    assert payload["link"] == "https://kpi.example.com/drilldown?execution=7"
    assert payload["event"]["kpi_name"] == "Revenue" and payload["text"].startswith("Alert: ")
    call = only(store, "webhook")
    assert (call.status, call.attempts) == ("sent", 2)
    assert [t.ok for t in call.tries] == [False, True] and "500" in (call.tries[0].error or "")
    [channel] = store.webhooks()
    assert not channel.failing and channel.consecutive_failures == 0
    assert channel.last_success_at is not None and "500" in (channel.last_error or "")


def test_a_404_fails_at_once_and_shows_the_channel_failing(
    store: KPIStore, receiver: Receiver
) -> None:
    store.add_webhook("team-chat", receiver.url, "admin")
    receiver.answers = [404]
    enqueue(store, webhooks=("team-chat",))
    assert store.deliver_due().failed == 1
    assert len(receiver.calls) == 1
    call = only(store, "webhook")
    assert (call.status, call.attempts, call.next_attempt_at) == ("failed", 1, None)
    [channel] = store.webhooks()
    assert channel.failing and "HTTP 404" in (channel.last_error or "")


def test_a_dead_address_is_retried_with_backoff_then_failed(store: KPIStore) -> None:
    store.add_webhook("nobody-home", f"http://127.0.0.1:{free_port()}/hook", "admin")
    enqueue(store, webhooks=("nobody-home",))
    now = db.utcnow()
    first = store.deliver_due(now)
    assert (first.claimed, first.retrying) == (1, 1)
    waiting = only(store, "webhook")
    assert (waiting.status, waiting.attempts) == ("pending", 2)  # two quick tries
    assert waiting.next_attempt_at is not None
    wait_s = (waiting.next_attempt_at - now).total_seconds()
    assert 30 <= wait_s <= 33  # KPI_NOTIFY_RETRY_WAIT_S, with at most 10% jitter
    assert store.deliver_due(now + dt.timedelta(seconds=29)).claimed == 0
    assert store.deliver_due(waiting.next_attempt_at).failed == 1
    failed = only(store, "webhook")
    assert (failed.status, failed.attempts, len(failed.tries)) == ("failed", 3, 3)
    assert all("cannot reach the webhook" in (t.error or "") for t in failed.tries)
    [channel] = store.webhooks()
    assert channel.failing and channel.consecutive_failures == 3
    [health] = [h for h in store.channel_health() if h.name == "nobody-home"]
    assert health.failing and "cannot reach" in (health.last_error or "")


def test_two_workers_at_once_deliver_each_call_once(store_url: str, receiver: Receiver) -> None:
    stores = [open_store(store_url), open_store(store_url)]
    try:
        stores[0].add_webhook("team-chat", receiver.url, "admin")
        ids = {enqueue(stores[0], webhooks=("team-chat",)) for _ in range(30)}
        start, reports = threading.Barrier(2), []

        def deliver(store: KPIStore) -> None:
            start.wait()
            reports.append(store.deliver_due())

        threads = [threading.Thread(target=deliver, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        received = [json.loads(body)["notification_id"] for _headers, body in receiver.calls]
        assert sorted(received) == sorted(ids)
        assert sum(r.claimed for r in reports) == 30 == sum(r.sent for r in reports)
        assert all(d.attempts == 1 for d in stores[0].deliveries(status="sent"))
    finally:
        for store in stores:
            store.close()


def test_a_worker_delivers_on_its_own(store: KPIStore, receiver: Receiver) -> None:
    store.add_webhook("team-chat", receiver.url, "admin")
    worker = Worker(store, concurrency=1, poll_interval_s=0.05).start()
    try:
        enqueue(store, webhooks=("team-chat",))
        assert receiver.arrived.wait(timeout=30)
    finally:
        worker.stop()


def test_unknown_and_paused_webhooks_are_skipped_with_a_reason(
    store: KPIStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_webhook("paused", receiver.url, "admin")
    store.update_webhook("paused", "admin", active=False)
    with caplog.at_level(logging.INFO, logger="kpi_store.notifications"):
        enqueue(store, people=("ana@example.com",), webhooks=("gone", "paused"))
    assert [d.channel for d in store.deliveries()] == ["inbox"]
    assert "no webhook channel named 'gone'" in caplog.text and "'paused' is paused" in caplog.text


def test_a_call_queued_for_a_channel_removed_since_fails_saying_so(
    store: KPIStore, receiver: Receiver
) -> None:
    store.add_webhook("team-chat", receiver.url, "admin")
    enqueue(store, webhooks=("team-chat",))
    store.remove_webhook("team-chat", "admin")
    assert store.deliver_due().failed == 1
    assert "removed or paused" in (only(store, "webhook").last_error or "") and not receiver.calls


# -- managing webhooks -----------------------------------------------------------------------


def test_webhook_addresses_and_secrets_are_kept_encrypted_and_shown_masked(
    store: KPIStore, receiver: Receiver
) -> None:
    saved = store.add_webhook("team-chat", receiver.url, "admin", secret="s" * 20)
    assert saved.secret == "s" * 20
    assert saved.channel.url.endswith("/…") and "secret-token" not in saved.channel.url
    with store.engine.connect() as connection:
        row = connection.execute(sa.select(webhook_channels)).one()
    assert row.url.startswith("fernet:") and row.secret.startswith("fernet:")
    assert "secret-token" not in row.url and "s" * 20 not in row.secret
    rotated = store.update_webhook("team-chat", "admin", rotate_secret=True)
    assert rotated.secret and rotated.secret != saved.secret
    assert store.update_webhook("team-chat", "admin", active=False).secret is None
    store.remove_webhook("team-chat", "admin")
    entries = store.audit_log(limit=4)
    assert [e.action for e in entries] == [
        "CHANNEL_REMOVE",
        "CHANNEL_UPDATE",
        "CHANNEL_UPDATE",
        "CHANNEL_ADD",
    ]
    logged = json.dumps([e.details for e in entries])
    assert "secret-token" not in logged and "s" * 20 not in logged and rotated.secret not in logged
    assert store.webhooks() == []


def test_webhook_input_is_checked(store: KPIStore, receiver: Receiver) -> None:
    with pytest.raises(ValidationError, match="http:// or https://.*'ftp:'"):
        store.add_webhook("files", "ftp://example.com/drop", "admin")
    with pytest.raises(ValidationError, match="http:// or https://"):
        store.add_webhook("files", "example.com/hook", "admin")
    with pytest.raises(ValidationError, match="host name"):
        store.add_webhook("files", "http://:80/hook", "admin")
    with pytest.raises(ValidationError, match="webhook name"):
        store.add_webhook("two words", receiver.url, "admin")
    with pytest.raises(ValidationError, match="secret"):
        store.add_webhook("short", receiver.url, "admin", secret="abc")
    store.add_webhook("team-chat", receiver.url, "admin")
    with pytest.raises(ValidationError, match="already exists"):
        store.add_webhook("team-chat", receiver.url, "admin")
    with pytest.raises(ValidationError, match="http:// or https://"):
        store.update_webhook("team-chat", "admin", url="javascript:alert(1)")
    with pytest.raises(NotFoundError, match="no webhook channel named 'nope'"):
        store.remove_webhook("nope", "admin")
    with pytest.raises(ValidationError, match="delivery status"):
        store.deliveries(status="lost")


def test_a_new_address_starts_the_channel_s_health_afresh(
    store: KPIStore, receiver: Receiver
) -> None:
    store.add_webhook("team-chat", receiver.url, "admin")
    receiver.answers = [404]
    enqueue(store, webhooks=("team-chat",))
    store.deliver_due()
    assert store.webhooks()[0].failing
    store.update_webhook("team-chat", "admin", url=receiver.url + "?v=2")
    channel = store.webhooks()[0]
    assert not channel.failing and channel.last_error is None


def test_a_test_notification_reaches_the_inbox_and_the_webhook(
    store: KPIStore, receiver: Receiver
) -> None:
    secret = store.add_webhook("team-chat", receiver.url, "admin").secret
    assert secret
    store.send_test_notification("Ana", webhook="team-chat")
    [item] = store.inbox(actor="Ana")
    assert item.event.kind == "test" and item.link is None
    assert store.deliver_due().sent == 1
    [(headers, body)] = receiver.calls
    assert verified(secret, headers, body) and json.loads(body)["kind"] == "test"
    with pytest.raises(NotFoundError):
        store.send_test_notification("Ana", webhook="nope")


# -- the inbox -------------------------------------------------------------------------------


def test_each_person_reads_and_marks_only_their_own_inbox(store: KPIStore) -> None:
    enqueue(store, people=("ana@example.com", "Bo"))
    enqueue(store, event(kind="recovered", run_id=8), people=("Ana@Example.COM",))
    mine = store.inbox(actor="ANA@example.com")
    assert [i.event.kind for i in mine] == ["recovered", "firing"]
    assert mine[1].link == "drilldown?execution=7"
    assert store.unread_count(actor="ana@example.com") == 2
    [bos] = store.inbox(actor="Bo")
    with pytest.raises(NotFoundError, match=f"item\\(s\\) {bos.id}"):
        store.mark_read([mine[0].id, bos.id], actor="ana@example.com")
    assert store.unread_count(actor="ana@example.com") == 2  # nothing changed
    assert store.mark_read([mine[0].id], actor="ana@example.com") == 1
    assert [i.id for i in store.inbox(actor="ana@example.com", unread_only=True)] == [mine[1].id]
    assert store.mark_all_read(actor="ana@example.com") == 1
    assert store.unread_count(actor="ana@example.com") == 0
    assert store.unread_count(actor="Bo") == 1 and store.inbox(actor="Bo")[0].unread
    with pytest.raises(ValidationError):
        store.inbox(actor="  ")


def test_nothing_is_left_when_the_enqueuing_transaction_rolls_back(store: KPIStore) -> None:
    store.add_webhook("team-chat", "https://example.com/hook", "admin")
    with pytest.raises(RuntimeError), db.write_tx(store.engine) as connection:
        notifications.enqueue(
            connection, event(), people=["ana@example.com"], webhooks=["team-chat"]
        )
        raise RuntimeError("the evaluation failed after queuing")
    assert store.deliveries() == [] and store.inbox(actor="ana@example.com") == []
    with store.engine.connect() as connection:
        count = sa.select(sa.func.count()).select_from(sa.table("notifications"))
        assert connection.execute(count).scalar_one() == 0


# -- with sign-in on -------------------------------------------------------------------------


def test_with_sign_in_the_inbox_is_the_email_s_and_scopes_hold(
    store_url: str, source_db: Path, tmp_path: Path
) -> None:
    boss, viewer, scoped = "boss@example.com", "viewer@example.com", "scoped@example.com"
    store = open_store(store_url, auth="oidc", admins=boss)
    try:
        other_db = tmp_path / "other.db"
        shutil.copy(source_db, other_db)
        store.add_data_source("shop", f"sqlite:///{source_db}", boss)
        store.add_data_source("other", f"sqlite:///{other_db}", boss)
        store.add_person(viewer, boss)
        store.add_person(scoped, boss, data_sources=["other"])
        shop_kpi = store.create_kpi(make_spec(), boss).id
        other_kpi = store.create_kpi(make_spec(name="Other", data_source="other"), boss).id
        enqueue(store, event(kpi_id=shop_kpi), people=(viewer, scoped))
        enqueue(store, event(kpi_id=other_kpi, kpi_name="Other"), people=(viewer, scoped))
        assert len(store.inbox(actor="Viewer@Example.com")) == 2
        assert [i.event.kpi_name for i in store.inbox(actor=scoped)] == ["Other"]
        assert store.unread_count(actor=scoped) == 1
        store.add_webhook("team-chat", "https://example.com/hook", boss)
        with pytest.raises(PermissionDeniedError, match="send_test_notification"):
            store.send_test_notification(viewer, webhook="team-chat")
        store.send_test_notification(viewer)  # their own inbox: anyone
        assert store.inbox(actor=viewer)[0].event.kind == "test"
    finally:
        store.close()


def test_a_delivery_whose_worker_died_is_sent_once_its_claim_runs_out(
    store: KPIStore, receiver: Receiver
) -> None:
    store.add_webhook("team-chat", receiver.url, "admin")
    enqueue(store, webhooks=("team-chat",))
    now = db.utcnow()
    held = delivery.claim_next(store.engine, store.settings, now, set())
    assert held is not None  # ... and its worker dies before sending
    assert store.deliver_due(now).claimed == 0
    assert store.deliver_due(held.lease_until).sent == 1
    assert len(receiver.calls) == 1 and only(store, "webhook").attempts == 1
