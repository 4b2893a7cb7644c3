"""An INSERT ... RETURNING for a batch of rows, run on SQLite's own connection.

Recording webhook events is the web server's one write, and it comes in small batches (a
group commit gathers about ten under load). For such a batch SQLAlchemy's execution of a
multi-row INSERT (compiled-cache lookup, parameters set up per row, the result object) cost
several times what SQLite does with it. Here the statement is compiled once, each row is bound
by SQLAlchemy's own type processors (so the stored text is exactly what SQLAlchemy writes and
reads back: JSON, the time format) and run by the sqlite3 driver, in the transaction under way
(on the calling thread, like every short statement of `sqlite_inline`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from bot.store.sqlite_inline import InlineConnection

Row = Mapping[str, Any]


def insert_each(
    connection: sa.Connection, statement: sa.Insert, rows: Sequence[Row]
) -> list[tuple[Any, ...] | None] | None:
    """Each row's RETURNING values, or None where the row was not inserted (ON CONFLICT DO
    NOTHING), in the order of `rows`. `statement` takes each column as a bind parameter of
    the same name. None when `connection` is not on SQLite's inline driver: execute it with
    SQLAlchemy then."""
    driver = connection.connection.driver_connection
    if not isinstance(driver, InlineConnection):
        return None
    sql, bind = _compiled(statement, connection.dialect)
    try:
        parameters = [bind(row) for row in rows]
    except (TypeError, ValueError) as error:  # a naive time, a payload JSON cannot encode
        # What SQLAlchemy's own execution would raise for it (its type processors raised).
        raise sa.exc.StatementError(str(error), sql, None, error) from error
    cursor = driver.sqlite.cursor()
    try:
        returned: list[tuple[Any, ...] | None] = []
        for values in parameters:
            cursor.execute(sql, values)
            returned.append(cursor.fetchone())
        return returned
    finally:
        cursor.close()


@functools.cache
def _compiled(
    statement: sa.Insert, dialect: Dialect
) -> tuple[str, Callable[[Row], tuple[Any, ...]]]:
    compiled = statement.compile(dialect=dialect)
    names = compiled.positiontup or []
    table = statement.table
    processors = [
        (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names
    ]

    def bind(row: Row) -> tuple[Any, ...]:
        return tuple(row[name] if fn is None else fn(row[name]) for name, fn in processors)

    return compiled.string, bind
