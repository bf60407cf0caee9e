"""Indexes for reads ordered by return time: what saltext-mysql's readers run on the legacy views.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

``salt_returns.alter_time`` is ``returns.returned_at``
(salt_engine_lib/store/legacy_views.py), and Alcali orders by it: the
newest returns of a minion (``WHERE id = :minion ORDER BY alter_time DESC
LIMIT 50``), the newest returns of all minions, and its job graph (``WHERE
alter_time > :since``). Without these indexes each of those reads every
return (benchmarks/results/legacy_views_plans.md has the plans).

Frozen like every migration: no import of schema.py.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_returns_minion_returned_at", "returns", ["minion_id", "returned_at"])
    op.create_index("ix_returns_returned_at", "returns", ["returned_at"])


def downgrade():
    op.drop_index("ix_returns_returned_at", table_name="returns")
    op.drop_index("ix_returns_minion_returned_at", table_name="returns")
