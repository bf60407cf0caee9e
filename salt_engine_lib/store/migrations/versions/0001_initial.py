"""Initial schema: jobs, returns, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

A migration is a frozen snapshot: it spells its tables out instead of
importing schema.py, which will move on.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def mysql_options():
    """Binary, NO PAD collation: minion ids are case-sensitive and 'web1 ' is
    not 'web1' (MariaDB's utf8mb4_bin and MySQL's utf8mb4_bin are PAD SPACE)."""
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return {}
    if getattr(bind.dialect, "is_mariadb", False):
        collation = "utf8mb4_nopad_bin"
    elif bind.dialect.server_version_info >= (8, 0, 17):
        collation = "utf8mb4_0900_bin"
    else:
        collation = "utf8mb4_bin"
    return {"mysql_charset": "utf8mb4", "mysql_collate": collation}


def upgrade():
    MYSQL_OPTIONS = mysql_options()  # noqa: N806 - reads like the constant it replaces
    op.create_table(
        "jobs",
        sa.Column("jid", sa.String(64), primary_key=True),
        sa.Column("master_id", sa.String(255)),
        sa.Column("fun", sa.String(255)),
        sa.Column("tgt", sa.Text),
        sa.Column("tgt_type", sa.String(32)),
        sa.Column("user", sa.String(255)),
        sa.Column("load", JSONDocument, nullable=False),
        sa.Column("minions", JSONDocument),
        sa.Column("started_at", Timestamp),
        sa.Column("ended_at", Timestamp),
        sa.Column("stored_at", Timestamp, nullable=False),
        **MYSQL_OPTIONS,
    )
    op.create_index("ix_jobs_fun_jid", "jobs", ["fun", "jid"])
    op.create_table(
        "returns",
        sa.Column("jid", sa.String(64), primary_key=True),
        sa.Column("minion_id", sa.String(255), primary_key=True),
        sa.Column("master_id", sa.String(255)),
        sa.Column("fun", sa.String(255)),
        sa.Column("ret", JSONDocument),
        sa.Column("retcode", sa.Integer),
        sa.Column("success", sa.Boolean),
        sa.Column("document", JSONDocument, nullable=False),
        sa.Column("returned_at", Timestamp),
        sa.Column("stored_at", Timestamp, nullable=False),
        **MYSQL_OPTIONS,
    )
    op.create_index("ix_returns_minion_jid", "returns", ["minion_id", "jid"])
    op.create_index("ix_returns_fun_minion_jid", "returns", ["fun", "minion_id", "jid"])
    op.create_index("ix_returns_success_jid", "returns", ["success", "jid"])
    op.create_table(
        "events",
        sa.Column("id", EventId, primary_key=True, autoincrement=True),
        sa.Column("content_key", sa.String(64), nullable=False),
        sa.Column("tag", sa.Text, nullable=False),
        sa.Column("data", JSONDocument, nullable=False),
        sa.Column("master_id", sa.String(255)),
        sa.Column("stamp", Timestamp, nullable=False),
        sa.Column("stored_at", Timestamp, nullable=False),
        sa.UniqueConstraint("content_key", name="uq_events_content_key"),
        **MYSQL_OPTIONS,
    )
    op.create_index("ix_events_stamp", "events", ["stamp"])


def downgrade():
    op.drop_table("events")
    op.drop_table("returns")
    op.drop_table("jobs")
