"""Tables of the job store (SQLAlchemy Core).

Natural keys make every write idempotent: one job per ``(jid, namespace)``,
one return per ``(jid, namespace, minion_id)``, one event per
``content_key`` (a hash of namespace, tag and data). The *namespace* is the
job namespace a row belongs to (:func:`records.namespace_of`): a master
cluster's ``cluster_id``, else the id of the master that published the job.
Two independent masters that generate the same jid never merge; the masters
of one cluster share one namespace, so a job and its returns are stored once
whichever master received them; ``master_id`` says which master did.

Salt jids are UTC timestamps (``YYYYMMDDhhmmssffffff``) that sort by time,
and lead every job and return key, so the primary keys double as the time
index in every read scope: paging and retention are range scans on them.

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
# A job's rendered listing entry (salt_engine_lib.listing) holds its arguments:
# MySQL's TEXT stops at 64 KB.
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# SQLite only autoincrements an INTEGER PRIMARY KEY.
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

JID_LENGTH = 64
MINION_ID_LENGTH = 255
FUN_LENGTH = 255
NAMESPACE_LENGTH = 255

# DDL (and its MySQL charset/collation options) is owned by the Alembic
# migrations; these Table objects are what reads and writes are built from.

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("jid", sa.String(JID_LENGTH), primary_key=True),
    sa.Column("namespace", sa.String(NAMESPACE_LENGTH), primary_key=True),
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

# Each job's get_jids entry (salt_engine_lib.listing), a row per jobs row
# written with it and deleted with it: the full job listing reads this
# narrow table, not the jobs' loads. head NULL: a job stored before the
# listing existed whose upgrade could not render it (the read renders it).
job_listings = sa.Table(
    "job_listings",
    metadata,
    sa.Column("jid", sa.String(JID_LENGTH), primary_key=True),
    sa.Column("namespace", sa.String(NAMESPACE_LENGTH), primary_key=True),
    sa.Column("head", LongText),
    sa.Column("tail", sa.String(64)),
)

returns = sa.Table(
    "returns",
    metadata,
    sa.Column("jid", sa.String(JID_LENGTH), primary_key=True),
    sa.Column("namespace", sa.String(NAMESPACE_LENGTH), primary_key=True),
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
    # salt_returns.alter_time of the saltext-mysql views (store/legacy_views.py): a minion's
    # newest returns, every minion's newest, returns since T (what Alcali reads).
    sa.Index("ix_returns_minion_returned_at", "minion_id", "returned_at"),
    sa.Index("ix_returns_returned_at", "returned_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", EventId, primary_key=True, autoincrement=True),
    sa.Column("content_key", sa.String(64), nullable=False),
    sa.Column("tag", sa.Text, nullable=False),
    sa.Column("data", JSONDocument, nullable=False),
    sa.Column("namespace", sa.String(NAMESPACE_LENGTH), nullable=False),
    sa.Column("master_id", sa.String(MINION_ID_LENGTH)),
    sa.Column("stamp", Timestamp, nullable=False),
    sa.Column("stored_at", Timestamp, nullable=False),
    sa.UniqueConstraint("content_key", name="uq_events_content_key"),
    sa.Index("ix_events_stamp", "stamp"),
)

# Minions a job was published to beyond the publishing master's own list:
# what each syndic reports to a master-of-masters (save_minions with a
# syndic_id). A row per minion makes the union of several syndics' lists an
# insert-if-absent, with no read-modify-write to race.
job_minions = sa.Table(
    "job_minions",
    metadata,
    sa.Column("jid", sa.String(JID_LENGTH), primary_key=True),
    sa.Column("namespace", sa.String(NAMESPACE_LENGTH), primary_key=True),
    sa.Column("minion_id", sa.String(MINION_ID_LENGTH), primary_key=True),
    sa.Column("syndic_id", sa.String(MINION_ID_LENGTH)),
    sa.Column("stored_at", Timestamp, nullable=False),
)

# One row per engine writing into the store, refreshed by its periodic
# report: what ``salt-relay status`` lists (master id, mode, report age).
relay_engines = sa.Table(
    "relay_engines",
    metadata,
    sa.Column("master_id", sa.String(MINION_ID_LENGTH), primary_key=True),
    sa.Column("namespace", sa.String(NAMESPACE_LENGTH), nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("host", sa.String(255)),
    sa.Column("version", sa.String(64)),
    sa.Column("stats", JSONDocument),
    sa.Column("reported_at", Timestamp, nullable=False),
)
