"""Several masters, one store: job namespaces, syndic minion lists, engine reports.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

``jobs``, ``returns`` and ``events`` get ``namespace`` (the job namespace a
row belongs to: a master cluster's id, else the publishing master's id), and
the job and return keys take it in: ``(jid, namespace)`` and ``(jid,
namespace, minion_id)``. Existing rows are given the namespace of the master
that stored them (``master_id``; ``''`` for rows a minion wrote), which is
what the code stores for them from now on, so nothing written before the
upgrade is duplicated by the same job arriving again after it. Event content
keys already hashed the master id, the namespace of a single master.

New tables: ``job_minions`` (the minions each syndic reports for a job) and
``relay_engines`` (one row per engine writing into the store).

Frozen like every migration: no import of schema.py.
"""

import warnings

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

# table: its new primary key (None: no primary key change).
KEYED_TABLES = {
    "jobs": ("jid", "namespace"),
    "returns": ("jid", "namespace", "minion_id"),
    "events": None,
}


def _dialect():
    return op.get_bind().dialect.name


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


def _set_primary_key(table, columns):
    if _dialect() in ("mysql", "mariadb"):
        # One ALTER: the table is rebuilt once and never lacks a key.
        op.execute(f"ALTER TABLE {table} DROP PRIMARY KEY, ADD PRIMARY KEY ({', '.join(columns)})")
    else:
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, list(columns))


def _namespace_required(table, key):
    """``namespace`` NOT NULL, and part of the primary key if ``key`` names one."""
    if _dialect() == "sqlite":
        # SQLite alters neither: batch mode copies the table, once for both.
        with warnings.catch_warnings():
            # SQLAlchemy notes that the copy's key differs from the reflected one: that is the point.
            warnings.filterwarnings("ignore", "Table '_alembic_tmp_", sa.exc.SAWarning)
            with op.batch_alter_table(table, recreate="always") as batch:
                batch.alter_column("namespace", existing_type=sa.String(255), nullable=False)
                if key:
                    batch.create_primary_key(f"pk_{table}", list(key))
        return
    op.alter_column(table, "namespace", existing_type=sa.String(255), nullable=False)
    if key:
        _set_primary_key(table, key)


def upgrade():
    for table, key in KEYED_TABLES.items():
        op.add_column(table, sa.Column("namespace", sa.String(255), nullable=True))
        op.execute(f"UPDATE {table} SET namespace = COALESCE(master_id, '')")
        _namespace_required(table, key)
    options = mysql_options()
    op.create_table(
        "job_minions",
        sa.Column("jid", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("minion_id", sa.String(255), primary_key=True),
        sa.Column("syndic_id", sa.String(255)),
        sa.Column("stored_at", Timestamp, nullable=False),
        **options,
    )
    op.create_table(
        "relay_engines",
        sa.Column("master_id", sa.String(255), primary_key=True),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("version", sa.String(64)),
        sa.Column("stats", JSONDocument),
        sa.Column("reported_at", Timestamp, nullable=False),
        **options,
    )


def downgrade():
    """Back to 0001; fails (key violation) if two namespaces hold the same jid, rather than lose one."""
    op.drop_table("relay_engines")
    op.drop_table("job_minions")
    for table, key in KEYED_TABLES.items():
        old_key = [column for column in key or () if column != "namespace"]
        if _dialect() == "sqlite":
            with op.batch_alter_table(table, recreate="always") as batch:
                if old_key:
                    batch.create_primary_key(f"pk_{table}", old_key)
                batch.drop_column("namespace")
            continue
        if old_key:
            _set_primary_key(table, old_key)
        op.drop_column(table, "namespace")
