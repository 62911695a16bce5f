"""Access cases for schedules (merged into the role matrix by tests/test_access.py).

Writes need an editor, reads a viewer; each acts on a schedule an admin made for the
world's KPI. Who a schedule may run as, and data-source scopes, are in
tests/test_schedules.py.
"""

from __future__ import annotations

from access_world import BOSS, Case, World

CRON = "0 9 * * *"


def a_schedule(w: World) -> int:
    return w.store.create_schedule(w.kpi, CRON, BOSS).id


def a_paused_schedule(w: World) -> int:
    return w.store.pause_schedule(a_schedule(w), BOSS).id


CASES: dict[str, Case] = {
    "create_schedule": Case(lambda w, a, _: w.store.create_schedule(w.kpi, CRON, a)),
    "update_schedule": Case(
        lambda w, a, s: w.store.update_schedule(s, a, cron="0 10 * * *"), a_schedule
    ),
    "pause_schedule": Case(lambda w, a, s: w.store.pause_schedule(s, a), a_schedule),
    "resume_schedule": Case(lambda w, a, s: w.store.resume_schedule(s, a), a_paused_schedule),
    "delete_schedule": Case(lambda w, a, s: w.store.delete_schedule(s, a), a_schedule),
    "schedules": Case(lambda w, a, _: w.store.schedules(actor=a)),
    "schedule": Case(lambda w, a, s: w.store.schedule(s, actor=a), a_schedule),
    "schedule_ticks": Case(lambda w, a, s: w.store.schedule_ticks(s, actor=a), a_schedule),
}

# Public methods without a rule, each with the test that covers it (for test_access.py's
# UNGUARDED, once it reads them from the case modules).
UNGUARDED = {
    "run_due_schedules": "tests/test_schedules.py and tests/test_schedule_workers.py",
    "preview_schedule": "tests/test_schedules.py: the preview of an unsaved expression",
}
