"""The job listing in a narrow table of its own: ``job_listings``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

``jobs.listing`` (0003) moves to ``job_listings(jid, namespace, head,
tail)``, a row per job. The full job listing then reads only the rendered
entries, not the publish loads in the same pages: at 1,000,000 jobs the
``jobs`` table was twice saltext-mysql's ``jids`` and did not fit MariaDB's
default buffer pool. The entry is stored in two parts (see
``salt_engine_lib.listing``): ``head``, the member without its closing
brace, and ``tail``, NULL (a brace) or ``,"EndTime":"..."}`` once the job
has an end time, so the read concatenates instead of cutting the brace off
and formatting the time in SQL.

Every job gets its row here, ``head`` NULL where 0003 could not render it
(the read renders those). ``jobs.listing`` is dropped: a salt-relay older
than this revision refuses the database anyway (it finds a revision it does
not know), so every process is upgraded together.

Frozen like every migration: no import of salt_engine_lib; the tail below
is the text ``salt_engine_lib.listing.tail`` writes.
"""

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
PAGE_SIZE = 2000

jobs = sa.table(
    "jobs",
    sa.column("jid", sa.String),
    sa.column("namespace", sa.String),
    sa.column("listing", sa.Text),
    sa.column("ended_at", sa.DateTime),
)
job_listings = sa.table(
    "job_listings", sa.column("jid", sa.String), sa.column("namespace", sa.String), sa.column("head", sa.Text), sa.column("tail", sa.String)
)


def mysql_options():
    """The table options of 0001 (binary NO PAD collation on MariaDB)."""
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


def _without_closing_brace(dialect):
    """SQL of jobs.listing without its last character (a member's closing brace)."""
    if dialect in ("mysql", "mariadb"):
        return "LEFT(listing, CHAR_LENGTH(listing) - 1)"  # LENGTH counts bytes
    if dialect == "postgresql":
        return "left(listing, -1)"
    return "substr(listing, 1, length(listing) - 1)"


def _tail(ended_at):
    return ',"EndTime":' + json.dumps(ended_at.strftime("%Y, %b %d %H:%M:%S.%f")) + "}"


def _write_tails(conn):
    before = None
    while True:
        query = sa.select(jobs.c.jid, jobs.c.namespace, jobs.c.ended_at).where(jobs.c.ended_at.is_not(None))
        if before is not None:
            query = query.where(sa.tuple_(jobs.c.jid, jobs.c.namespace) > sa.tuple_(*before))
        page = conn.execute(query.order_by(jobs.c.jid, jobs.c.namespace).limit(PAGE_SIZE)).fetchall()
        if not page:
            return
        update = job_listings.update().where(
            job_listings.c.jid == sa.bindparam("b_jid"), job_listings.c.namespace == sa.bindparam("b_namespace")
        )
        conn.execute(
            update.values(tail=sa.bindparam("b_tail")),
            [{"b_jid": row.jid, "b_namespace": row.namespace, "b_tail": _tail(row.ended_at)} for row in page],
        )
        before = (page[-1].jid, page[-1].namespace)


def upgrade():
    conn = op.get_bind()
    op.create_table(
        "job_listings",
        sa.Column("jid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("head", LongText),
        sa.Column("tail", sa.String(64)),
        **mysql_options(),
    )
    conn.execute(
        sa.text(
            "INSERT INTO job_listings (jid, namespace, head) "
            f"SELECT jid, namespace, CASE WHEN listing IS NULL THEN NULL ELSE {_without_closing_brace(conn.dialect.name)} END FROM jobs"
        )
    )
    _write_tails(conn)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("listing")
    # Statistics now: without them PostgreSQL bounded each listing page by a
    # sequential scan and a sort until autovacuum came by.
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ANALYZE job_listings"))
    elif conn.dialect.name in ("mysql", "mariadb"):
        conn.execute(sa.text("ANALYZE TABLE job_listings"))


def downgrade():
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("listing", LongText, nullable=True))
    closed = sa.select(job_listings.c.head.concat("}")).where(
        job_listings.c.jid == jobs.c.jid, job_listings.c.namespace == jobs.c.namespace
    )
    op.get_bind().execute(jobs.update().values(listing=closed.scalar_subquery()))
    op.drop_table("job_listings")
