"""The third wall of a SQLite data source: an authorizer that lets a query read and compute.

``mode=ro`` and ``PRAGMA query_only`` already stop writes. They do not stop what a read can
reveal or load: ``fts3_tokenizer`` returns memory addresses, ``load_extension`` loads code,
``pragma_database_list`` names server paths, ``ATTACH`` opens other files. SQLite asks the
authorizer about every table, function and pragma while it prepares a statement; anything
not on the lists below is refused with "not authorized".
"""

from __future__ import annotations

import sqlite3
from typing import Any

# Functions a KPI query may call: SQLite's core, date/time, math, aggregate, window and
# JSON functions. Not here: load_extension, fts3_tokenizer, sqlite_* introspection,
# randomblob (a cheap way to make huge values), unlikely-needed debugging functions.
_FUNCTION_NAMES = """
abs changes char coalesce concat concat_ws format glob hex ifnull iif instr length like
likelihood likely lower ltrim max min nullif octet_length printf quote random replace
round rtrim sign soundex substr substring trim typeof unhex unicode unlikely upper zeroblob
date time datetime julianday strftime unixepoch timediff current_date current_time
current_timestamp
acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log
log10 log2 mod pi pow power radians sin sinh sqrt tan tanh trunc
avg count group_concat string_agg sum total median percentile
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
nth_value
json jsonb json_array jsonb_array json_array_length json_error_position json_extract
jsonb_extract json_insert jsonb_insert json_object jsonb_object json_patch jsonb_patch
json_pretty json_remove jsonb_remove json_replace jsonb_replace json_set jsonb_set
json_type json_valid json_quote json_group_array jsonb_group_array json_group_object
jsonb_group_object json_each json_tree -> ->>
"""
ALLOWED_FUNCTIONS = frozenset(_FUNCTION_NAMES.split())

# What a read needs: SELECT, reading columns, recursive CTEs, the transaction SQLAlchemy
# begins and rolls back. SQLite also reports UPDATE of sqlite_master columns while it sets
# up a table-valued function such as json_each; nothing is written (the file is read-only).
_ALWAYS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
    | {sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT}
)

# SQLAlchemy reads this one when it first connects; reading it reveals nothing.
_READABLE_PRAGMAS = frozenset({"read_uncommitted"})


def authorize(
    action: int, arg1: str | None, arg2: str | None, _database: str | None, _source: str | None
) -> int:
    if action in _ALWAYS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return (
            sqlite3.SQLITE_OK if (arg2 or "").lower() in ALLOWED_FUNCTIONS else sqlite3.SQLITE_DENY
        )
    if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 in _READABLE_PRAGMAS and arg2 is None:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def harden(connection: sqlite3.Connection) -> None:
    """Install the authorizer on a data-source connection (after its own PRAGMAs ran)."""
    connection.set_authorizer(authorize)


def limit_values(connection: sqlite3.Connection, max_bytes: int) -> None:
    """Cap every string and blob a query on ``connection`` can build at ``max_bytes``.

    ``SQLITE_LIMIT_LENGTH`` makes SQLite refuse a bigger value with "string or blob too
    big" before Python sees it, except in ``printf``/``format``, which quietly return NULL
    instead. Those two are replaced by a wrapper that runs SQLite's own ``printf`` on a
    private in-memory connection under the same limit and turns that NULL into the error.
    """
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)
    helper = sqlite3.connect(":memory:", check_same_thread=False)
    statements: dict[int, str] = {}

    def printf(*args: Any) -> Any:
        if not args or args[0] is None:
            return None
        limit = connection.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        helper.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
        statement = statements.get(len(args))
        if statement is None:
            marks = ", ".join("?" * len(args))
            statement = statements.setdefault(len(args), f"SELECT printf({marks})")
        text = helper.execute(statement, args).fetchone()[0]
        if text is None:
            raise OverflowError  # the sqlite3 module reports it as SQLITE_TOOBIG
        return text

    for name in ("printf", "format"):
        connection.create_function(name, -1, printf, deterministic=True)
