"""The rendered job listing: ``jobs.listing``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

``jobs`` gets ``listing``, each job's ``get_jids`` entry rendered when the
job is written (``salt_engine_lib.listing``), so the full job listing is one
string aggregation per page instead of decoding every publish load.
Existing jobs are rendered here, in pages, with the Salt of the process
that upgrades (``salt-relay db upgrade`` runs where Salt is installed). If
Salt cannot be imported the column stays NULL: the read renders such rows
itself, only slower.

Frozen like every migration: no import of salt_engine_lib; the rendering
below is the member text ``"<jid>":{...}`` that ``salt_engine_lib.listing``
writes.
"""

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
PAGE_SIZE = 2000

jobs = sa.table(
    "jobs", sa.column("jid", sa.String), sa.column("namespace", sa.String), sa.column("load", sa.JSON), sa.column("listing", sa.Text)
)


def _render(format_jid_instance, jid, load):
    return json.dumps(jid) + ":" + json.dumps(format_jid_instance(jid, dict(load or {})), default=str)


def _render_existing_jobs(conn):
    try:
        from salt.utils.jid import format_jid_instance
    except ImportError:
        return
    before = None
    while True:
        query = sa.select(jobs.c.jid, jobs.c.namespace, jobs.c.load).where(jobs.c.listing.is_(None))
        if before is not None:
            query = query.where(sa.tuple_(jobs.c.jid, jobs.c.namespace) > sa.tuple_(*before))
        page = conn.execute(query.order_by(jobs.c.jid, jobs.c.namespace).limit(PAGE_SIZE)).fetchall()
        if not page:
            return
        update = jobs.update().where(jobs.c.jid == sa.bindparam("b_jid"), jobs.c.namespace == sa.bindparam("b_namespace"))
        conn.execute(
            update.values(listing=sa.bindparam("b_listing")),
            [
                {"b_jid": row.jid, "b_namespace": row.namespace, "b_listing": _render(format_jid_instance, row.jid, row.load)}
                for row in page
            ],
        )
        before = (page[-1].jid, page[-1].namespace)


def upgrade():
    op.add_column("jobs", sa.Column("listing", LongText, nullable=True))
    _render_existing_jobs(op.get_bind())


def downgrade():
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("jobs") as batch:
            batch.drop_column("listing")
        return
    op.drop_column("jobs", "listing")
