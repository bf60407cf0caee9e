"""Tables of the job store (SQLAlchemy Core).

Natural keys make every write idempotent: one job per ``jid``, one return per
``(jid, minion_id)``, one event per ``content_key``. Salt jids are UTC
timestamps (``YYYYMMDDhhmmssffffff``) that sort by time, so the primary keys
double as the time index: paging and retention are range scans on them.

A return's value is stored once, in ``returns.ret``; ``returns.document``
holds the rest of the return document (out, metadata, _stamp, ...), so a
20 KB state return is not written twice.

Changing a table here needs a new Alembic revision in ``migrations/versions``.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

# Native JSON where the dialect has it: JSONB on PostgreSQL; on MariaDB JSON
# is LONGTEXT with a json_valid() check; SQLite stores text.
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# MySQL's DATETIME drops microseconds unless asked for them.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# SQLite only autoincrements an INTEGER PRIMARY KEY.
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

JID_LENGTH = 64
MINION_ID_LENGTH = 255
FUN_LENGTH = 255

# DDL (and its MySQL charset/collation options) is owned by the Alembic
# migrations; these Table objects are what reads and writes are built from.

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("jid", sa.String(JID_LENGTH), primary_key=True),
    sa.Column("master_id", sa.String(MINION_ID_LENGTH)),
    sa.Column("fun", sa.String(FUN_LENGTH)),
    sa.Column("tgt", sa.Text),
    sa.Column("tgt_type", sa.String(32)),
    sa.Column("user", sa.String(255)),
    sa.Column("load", JSONDocument, nullable=False),
    sa.Column("minions", JSONDocument),
    sa.Column("started_at", Timestamp),
    sa.Column("ended_at", Timestamp),
    sa.Column("stored_at", Timestamp, nullable=False),
    sa.Index("ix_jobs_fun_jid", "fun", "jid"),
)

returns = sa.Table(
    "returns",
    metadata,
    sa.Column("jid", sa.String(JID_LENGTH), primary_key=True),
    sa.Column("minion_id", sa.String(MINION_ID_LENGTH), primary_key=True),
    sa.Column("master_id", sa.String(MINION_ID_LENGTH)),
    sa.Column("fun", sa.String(FUN_LENGTH)),
    sa.Column("ret", JSONDocument),
    sa.Column("retcode", sa.Integer),
    sa.Column("success", sa.Boolean),
    sa.Column("document", JSONDocument, nullable=False),
    sa.Column("returned_at", Timestamp),
    sa.Column("stored_at", Timestamp, nullable=False),
    # latest returns of a minion; the last call of a function per minion;
    # failed returns since T (jids sort by time).
    sa.Index("ix_returns_minion_jid", "minion_id", "jid"),
    sa.Index("ix_returns_fun_minion_jid", "fun", "minion_id", "jid"),
    sa.Index("ix_returns_success_jid", "success", "jid"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", EventId, primary_key=True, autoincrement=True),
    sa.Column("content_key", sa.String(64), nullable=False),
    sa.Column("tag", sa.Text, nullable=False),
    sa.Column("data", JSONDocument, nullable=False),
    sa.Column("master_id", sa.String(MINION_ID_LENGTH)),
    sa.Column("stamp", Timestamp, nullable=False),
    sa.Column("stored_at", Timestamp, nullable=False),
    sa.UniqueConstraint("content_key", name="uq_events_content_key"),
    sa.Index("ix_events_stamp", "stamp"),
)
