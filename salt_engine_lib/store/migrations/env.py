"""Alembic environment: always runs on the connection salt-relay passes in.

``salt_engine_lib.store.migrate`` builds the Alembic Config in code and puts
an open connection in ``config.attributes["connection"]`` (Alembic cookbook:
"Sharing a Connection across one or more programmatic migration commands").
"""

from alembic import context

from salt_engine_lib.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("salt-relay migrations run through `salt-relay db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
