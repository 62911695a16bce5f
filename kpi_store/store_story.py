"""The part of ``KPIStore`` that tells a number's story: unusual values and what changed."""

from __future__ import annotations


class StoryDesk:
    """Unusual values and "What changed?"."""
