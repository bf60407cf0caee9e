"""saltext-mysql (returner ``mysql``) for the benchmarks: its schema and its opts.

The schema is the one its own module docstring tells users to create
("Use the following mysql database schema"), read from the installed
package, so the benchmark runs against what that version documents.
Install it with ``pip install 'salt-relay[bench]'`` (or ``pip install saltext-mysql``).
"""

import re

from tests.support.databases import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, unique_name


def schema_statements():
    """The ``CREATE TABLE`` statements of the installed saltext-mysql's docstring."""
    try:
        from saltext.mysql.returners import mysql as module
    except ImportError as err:
        raise SystemExit(f"saltext-mysql is not installed ({err}): pip install 'salt-relay[bench]'") from err
    doc = module.__doc__ or ""
    if ".. code-block:: sql" not in doc:
        raise SystemExit("saltext-mysql: no SQL schema found in saltext.mysql.returners.mysql's docstring")
    statements = re.findall(r"CREATE TABLE .*?;", doc.split(".. code-block:: sql", 1)[1], re.S)
    if not any("`jids`" in s for s in statements) or not any("`salt_returns`" in s for s in statements):
        raise SystemExit("saltext-mysql: its docstring's schema lacks the jids/salt_returns tables")
    return statements


def create_database(admin):
    """A fresh database ``relay_bench_mysql_<hex8>`` with saltext-mysql's tables; returns its name.

    Dropped like any other: ``tests.support.databases.drop_database("mysql", name)``.

    ``admin`` is an autocommit PyMySQL connection as root (``tests.support.databases.mysql_admin()``).
    """
    statements = schema_statements()
    name = unique_name("relay_bench_mysql")
    with admin.cursor() as cursor:
        # As its docstring's CREATE DATABASE does.
        cursor.execute(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8 DEFAULT COLLATE utf8_general_ci")
        cursor.execute(f"USE `{name}`")
        for statement in statements:
            cursor.execute(statement)
    return name


def opts(database):
    """Master opts keys that point the ``mysql`` returner at ``database``."""
    return {
        "mysql.host": MYSQL_HOST,
        "mysql.user": MYSQL_USER,
        # root has no password here; an empty value would fall back to the
        # returner's default "salt", while the string "None" becomes None.
        "mysql.pass": "None",
        "mysql.db": database,
        "mysql.port": MYSQL_PORT,
    }
