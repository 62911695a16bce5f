"""The part of ``KPIStore`` for Notifications: the in-app inbox, email and webhooks, delivered by the workers."""

from __future__ import annotations


class NotificationDesk:
    """Notifications: the in-app inbox, email and webhooks, delivered by the workers."""
