"""MariaDB/MySQL bulk upserts that send a batch as one JSON parameter.

PyMySQL escapes every value of an executemany in Python: a worker storing
ping returns spent about a third of its time there. Here a chunk of rows
travels as one JSON array (written by orjson), bound as a single parameter,
and the server unpacks it with ``JSON_TABLE`` inside ``INSERT ... SELECT``::

    INSERT INTO returns (jid, ...) SELECT c0, ... FROM JSON_TABLE(%s, '$[*]'
      COLUMNS (c0 LONGTEXT PATH '$[0]', ...)) AS relay_rows
    ON DUPLICATE KEY UPDATE ...

Still one parameterized statement: no value is ever spliced into SQL text.
Every JSON_TABLE column is LONGTEXT, so nothing is cut or coerced on the way:
the target column's own type and the server's strict mode decide, exactly as
for the executemany path. Values are converted as SQLAlchemy would bind them
(JSON columns as JSON text, ``None`` in a JSON column as JSON ``null``,
booleans as 1/0, datetimes as text). A row orjson cannot write (lone
surrogates, integers over 64 bits) makes the caller fall back to the
executemany path for that chunk.

Needs JSON_TABLE: MariaDB 10.6+ or MySQL 8.0+ (:func:`supported`).
"""

from __future__ import annotations

import datetime
from typing import Sequence

import orjson
import sqlalchemy as sa

from salt_engine_lib import jsonsafe
from salt_engine_lib.errors import BulkPathUnsupported

# Keep each statement well under the server's max_allowed_packet (16 MiB by default).
MAX_CHUNK_BYTES = 4 << 20


def supported(conn: sa.Connection) -> bool:
    dialect = conn.dialect
    if dialect.name not in ("mysql", "mariadb"):
        return False
    version = dialect.server_version_info or ()
    if getattr(dialect, "is_mariadb", False):
        return version >= (10, 6)
    return version >= (8, 0)


def _quote(conn, name):
    return conn.dialect.identifier_preparer.quote(name)


def _converters(table, columns):
    def as_json(value):
        return jsonsafe.dumps(value)

    def as_scalar(value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, datetime.datetime):
            return value.isoformat(" ")
        return value

    return [as_json if isinstance(table.c[name].type, sa.JSON) else as_scalar for name in columns]


def statement(conn: sa.Connection, table: sa.Table, columns: list[str], update_columns: Sequence[str], conflict_key: str) -> str:
    names = ", ".join(_quote(conn, name) for name in columns)
    picks = ", ".join(f"c{index}" for index in range(len(columns)))
    shape = ", ".join(f"c{index} LONGTEXT PATH '$[{index}]'" for index in range(len(columns)))
    target = _quote(conn, table.name)
    if update_columns:
        changes = ", ".join(f"{_quote(conn, col)} = VALUES({_quote(conn, col)})" for col in update_columns)
    else:
        # A no-op assignment rather than INSERT IGNORE, which would also
        # swallow truncation and NOT NULL errors.
        key = _quote(conn, conflict_key)
        changes = f"{key} = {target}.{key}"
    return (
        f"INSERT INTO {target} ({names}) SELECT {picks} FROM JSON_TABLE(%s, '$[*]' COLUMNS ({shape})) AS relay_rows "
        f"ON DUPLICATE KEY UPDATE {changes}"
    )


def chunks(table: sa.Table, rows: list[dict]) -> tuple[list[str], list[str]]:
    """``(columns, [json array text, ...])``; BulkPathUnsupported if a row cannot be written as JSON."""
    columns = list(rows[0])
    convert = list(zip(columns, _converters(table, columns)))
    out, parts, size = [], [], 0
    for row in rows:
        try:
            encoded = orjson.dumps([to_text(row[name]) for name, to_text in convert])
        except TypeError as err:  # orjson.JSONEncodeError is one
            raise BulkPathUnsupported(str(err)) from None
        if parts and size + len(encoded) > MAX_CHUNK_BYTES:
            out.append(b"[" + b",".join(parts) + b"]")
            parts, size = [], 0
        parts.append(encoded)
        size += len(encoded) + 1
    if parts:
        out.append(b"[" + b",".join(parts) + b"]")
    return columns, [chunk.decode("utf-8") for chunk in out]


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict], update_columns: Sequence[str], conflict_key: str) -> None:
    """Write ``rows`` (dicts with identical keys); BulkPathUnsupported before anything is sent."""
    columns, documents = chunks(table, rows)
    sql = statement(conn, table, columns, update_columns, conflict_key)
    for document in documents:
        conn.exec_driver_sql(sql, (document,))
