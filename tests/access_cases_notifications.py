"""Access cases for notifications (merged into the role matrix by tests/test_access.py).

Everyone reads and marks their own inbox and sees channel health; webhook channels and
the delivery log are for admins. Another person's inbox items, a scoped person's view of
other data sources' KPIs and a webhook test below admin are in tests/test_notifications.py.
"""

from __future__ import annotations

from access_world import BOSS, Case, World, names


def a_webhook(w: World) -> str:
    name = f"hook{next(names)}"
    w.store.add_webhook(name, "https://hooks.example.com/services/T1/B2/XYZ", BOSS)
    return name


CASES: dict[str, Case] = {
    "inbox": Case(lambda w, a, _: w.store.inbox(actor=a)),
    "unread_count": Case(lambda w, a, _: w.store.unread_count(actor=a)),
    "mark_read": Case(lambda w, a, _: w.store.mark_read([], actor=a)),
    "mark_all_read": Case(lambda w, a, _: w.store.mark_all_read(actor=a)),
    "send_test_notification": Case(lambda w, a, _: w.store.send_test_notification(a)),
    "add_webhook": Case(
        lambda w, a, _: w.store.add_webhook(f"new{next(names)}", "https://example.com/h", a)
    ),
    "update_webhook": Case(
        lambda w, a, name: w.store.update_webhook(name, a, active=False), a_webhook
    ),
    "remove_webhook": Case(lambda w, a, name: w.store.remove_webhook(name, a), a_webhook),
    "webhooks": Case(lambda w, a, _: w.store.webhooks(actor=a)),
    "deliveries": Case(lambda w, a, _: w.store.deliveries(actor=a)),
    "channel_health": Case(lambda w, a, _: w.store.channel_health(actor=a)),
}

# Public methods without a rule, each with the test that covers it (for test_access.py's
# UNGUARDED, once it reads them from the case modules).
UNGUARDED = {
    "deliver_due": "tests/test_notifications.py (the workers' chore)",
}
