"""Room for case-folded names: ``kpi_definitions.name_key`` becomes VARCHAR(600).

``name_key`` is ``name.casefold()``, and case folding can lengthen text ("ß" becomes "ss",
"ΐ" three code points: at most three per character), so a 200-character name needs up to
600. SQLite does not enforce VARCHAR lengths and is left as it is (no table rebuild);
PostgreSQL does, and refused such names with a raw "value too long" error.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _resize(old: int, new: int) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "kpi_definitions",
        "name_key",
        type_=sa.String(new),
        existing_type=sa.String(old),
        existing_nullable=False,
    )


def upgrade() -> None:
    _resize(200, 600)


def downgrade() -> None:
    _resize(600, 200)
