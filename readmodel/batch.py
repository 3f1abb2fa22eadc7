"""A batch of read-model writes, gathered in memory and written in a few multi-row statements.

Projection functions state what an event does to a row — insert it, upsert it, update these
columns — and ``Batch`` keeps one statement per row, merged from all the batch's writes to that
row (``_merge`` says when two writes are one statement, exactly). ``flush`` then writes every
row: the statements of the same shape on the same table go out as one ``INSERT ... SELECT FROM
unnest(...)`` or ``UPDATE ... FROM unnest(...)``, the rows' values one array per column. Its text
is the same for any number of rows, so the server plans it once per connection (a multi-row
``VALUES`` is a new statement, parsed and planned again, at every row count). Writes to
different rows commute (the read model has no foreign keys and no statement reads another
row), so only the order per row is kept; when two writes to one row cannot be merged, the
second waits for a later round. A round's statements on different tables go out together, as
one statement (``_send``): a batch of one event, the normal case, writes in one round trip.

Operations that reach an end (succeeded, failed, compensated) are announced with ``pg_notify``
on ``OPERATION_ENDED_CHANNEL``, which PostgreSQL delivers when the batch commits, so a caller
waiting on one (``GET /operations/{id}?wait=``) wakes without polling.

The one thing projections read is the operation they advance: ``load_operations`` fetches them
for the whole batch at once, and projections keep that state current as they go. Nothing else
writes an existing operation row meanwhile: the API only inserts new ones, in the transaction
that also queues their first event, and projector batches are serialised by the checkpoint lock.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from readmodel.tables import EVENT_SEQUENCES, EVENTS, IN_FLIGHT, OPERATION_ENDED_CHANNEL, OPERATIONS

_PARAMETER = re.compile(r"\$(\d+)")
NOTIFY_ENDED = "SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id"


@dataclass
class OperationState:
    """What projections read of an operation: how far it got, and the backup it is about."""

    last_sequence: int
    backup_id: uuid.UUID | None


@dataclass(frozen=True)
class _Insert:
    values: dict[str, Any]
    on_conflict: frozenset[str] | None
    """``None``: the row must be new; empty: an existing row is left alone; else the columns an
    existing row takes from ``values``."""


@dataclass(frozen=True)
class _Update:
    values: dict[str, Any]


_Write = _Insert | _Update


@dataclass(frozen=True)
class _Statement:
    table: sa.Table | None
    """The table it writes (``None``: it writes none)."""
    sql: str
    """Its text, parameters numbered from ``$1``."""
    parameters: tuple[Any, ...]


def _merge(first: _Write, then: _Write) -> _Write | None:
    """One statement with the effect of ``first`` then ``then`` on the same row, if there is one.

    An update after an insert: the row exists by then, whichever way the insert went, so the
    update's columns join both the inserted values and those an existing row takes. An insert
    after an insert: the row exists by then, so only the second's update part acts. An insert
    after an update cannot be merged (whether the update found a row decides what happens).
    """
    if isinstance(then, _Update):
        if isinstance(first, _Update):
            return _Update(first.values | then.values)
        taken = None if first.on_conflict is None else first.on_conflict | frozenset(then.values)
        return _Insert(first.values | then.values, taken)
    if isinstance(first, _Insert) and then.on_conflict is not None:
        updated = {column: then.values[column] for column in then.on_conflict}
        taken = None if first.on_conflict is None else first.on_conflict | then.on_conflict
        return _Insert(first.values | updated, taken)
    return None


class Batch:
    """The writes of one batch of events, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._schema = _schema(conn)
        self._rows: dict[tuple[sa.Table, tuple[Any, ...]], list[_Write]] = {}
        self._operations: dict[uuid.UUID, OperationState | None] = {}
        self._event_sequences: dict[uuid.UUID, int] = {}
        self._published: set[uuid.UUID] = set()
        self._ended: set[uuid.UUID] = set()

    async def load_operations(self, ids: Iterable[uuid.UUID]) -> None:
        wanted = list({i for i in ids if i not in self._operations})
        if not wanted:
            return
        rows = await self._select(OPERATIONS, "id, last_sequence, backup_id", "id", wanted)
        found = {row.id: OperationState(row.last_sequence, row.backup_id) for row in rows}
        self._operations.update({i: found.get(i) for i in wanted})

    async def load_event_sequences(self, project_ids: Iterable[uuid.UUID]) -> None:
        """The projects' last public event numbers, locked until the batch commits."""
        wanted = list({i for i in project_ids if i not in self._event_sequences})
        if not wanted:
            return
        rows = await self._select(EVENT_SEQUENCES, "project_id, last_sequence", "project_id", wanted, lock=True)
        found = {row.project_id: row.last_sequence for row in rows}
        self._event_sequences.update({i: found.get(i, 0) for i in wanted})

    async def load_published(self, event_ids: Iterable[uuid.UUID]) -> None:
        """Which of these public events exist already (for events no operation guards)."""
        wanted = list(set(event_ids))
        if wanted:
            self._published.update(row.id for row in await self._select(EVENTS, "id", "id", wanted))

    async def _select(
        self, table: sa.Table, columns: str, key: str, ids: list[uuid.UUID], *, lock: bool = False
    ) -> sa.CursorResult[Any]:
        """The rows whose ``key`` is one of ``ids``: a statement text the same for any number of ids."""
        locking = " FOR UPDATE" if lock else ""
        statement = f"SELECT {columns} FROM {_qualified(self._schema, table)} WHERE {key} = ANY($1::uuid[]){locking}"
        return await self.conn.exec_driver_sql(statement, (ids,))

    def first_publication(self, event_id: uuid.UUID) -> bool:
        """``True`` once per public event id: not stored before, nor earlier in this batch."""
        if event_id in self._published:
            return False
        self._published.add(event_id)
        return True

    def next_event_sequence(self, project_id: uuid.UUID) -> int:
        """The number of the project's next public event (loaded first with ``load_event_sequences``)."""
        sequence = self._event_sequences[project_id] + 1
        self._event_sequences[project_id] = sequence
        row = {"project_id": project_id, "last_sequence": sequence}
        self.insert(EVENT_SEQUENCES, row, on_conflict={"last_sequence"})
        return sequence

    def operation(self, operation_id: uuid.UUID) -> OperationState | None:
        """The operation as this batch has left it so far; ``None`` when it does not exist."""
        return self._operations[operation_id]

    def insert_operation(self, operation_id: uuid.UUID, values: dict[str, Any], state: OperationState) -> None:
        self.insert(OPERATIONS, {"id": operation_id, **values}, on_conflict=())
        self._operations[operation_id] = state

    def advance_operation(self, operation_id: uuid.UUID, values: dict[str, Any]) -> None:
        """Update the operation's row; one whose status ends it is announced at the commit."""
        self.update(OPERATIONS, operation_id, values)
        if values.get("status", IN_FLIGHT[0]) not in IN_FLIGHT:
            self._ended.add(operation_id)

    def insert(self, table: sa.Table, values: dict[str, Any], *, on_conflict: Collection[str] | None = None) -> None:
        """Insert a row; with ``on_conflict``, an existing row takes those columns (none: left alone)."""
        key = tuple(values[name] for name in _key_names(table))
        self._write(table, key, _Insert(values, None if on_conflict is None else frozenset(on_conflict)))

    def update(self, table: sa.Table, key: Any, values: dict[str, Any]) -> None:
        """Set ``values`` on the row whose primary key is ``key`` (a tuple for a composite key), if it exists."""
        self._write(table, key if isinstance(key, tuple) else (key,), _Update(values))

    def _write(self, table: sa.Table, key: tuple[Any, ...], write: _Write) -> None:
        writes = self._rows.setdefault((table, key), [])
        if writes and (merged := _merge(writes[-1], write)) is not None:
            writes[-1] = merged
        else:
            writes.append(write)

    async def execute(self, statement: sa.Executable) -> None:
        """A statement over many rows (a range delete): after everything stated so far."""
        await self.flush()
        await self.conn.execute(statement)

    async def flush(self) -> None:
        """Write everything stated so far: round by round, per table its updates, then its inserts
        (an update may free a name a later insert takes), one statement per shape; the statements
        of a round go out together (``_send``)."""
        rows, self._rows = self._rows, {}
        depth = max((len(writes) for writes in rows.values()), default=0)
        for position in range(depth):
            shapes: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], _Write]]] = {}
            for (table, key), writes in rows.items():
                if position < len(writes):
                    write = writes[position]
                    conflict = write.on_conflict if isinstance(write, _Insert) else None
                    shape = (table, isinstance(write, _Insert), frozenset(write.values), conflict)
                    shapes.setdefault(shape, []).append((key, write))
            statements = [
                self._insert(table, conflict, [write.values for _, write in keyed])
                if inserting
                else self._update(table, columns, keyed)
                for (table, inserting, columns, conflict), keyed in sorted(shapes.items(), key=lambda s: s[0][1])
            ]
            if position == depth - 1 and self._ended:
                statements.append(
                    _Statement(None, NOTIFY_ENDED, (OPERATION_ENDED_CHANNEL, sorted(map(str, self._ended))))
                )
            await self._send(statements)
        self._ended = set()

    async def _send(self, statements: list[_Statement]) -> None:
        """Run the statements in order, as few round trips as they allow: consecutive statements on
        different tables go out as ONE statement, all but the last as data-modifying ``WITH``
        clauses. Those run on one snapshot, in no set order, which is all they need: each writes
        its own table, and none reads a row another writes. A second statement on a table starts
        the next round trip, so a table's updates still land before its inserts. The
        announcement of ended operations comes last, as the main statement (a ``WITH`` clause
        that only reads runs only when something reads it)."""
        group: list[_Statement] = []
        for statement in statements:
            if any(statement.table is not None and statement.table is sent.table for sent in group):
                await self._send_together(group)
                group = []
            group.append(statement)
        if group:
            await self._send_together(group)

    async def _send_together(self, group: list[_Statement]) -> None:
        clauses: list[str] = []
        parameters: list[Any] = []
        for statement in group:
            clauses.append(_renumbered(statement.sql, len(parameters)))
            parameters.extend(statement.parameters)
        *writes, main = clauses
        together = ", ".join(f"w{n} AS ({write})" for n, write in enumerate(writes))
        await self.conn.exec_driver_sql(f"WITH {together} {main}" if writes else main, tuple(parameters))

    def _insert(self, table: sa.Table, conflict: frozenset[str] | None, rows: list[dict[str, Any]]) -> _Statement:
        defaulted = [column for column in table.columns if column.default is not None and column.name not in rows[0]]
        if defaulted:
            rows = [{column.name: _default(column) for column in defaulted} | row for row in rows]
        fields = [(name, table.c[name]) for name in sorted(rows[0])]
        statement = _insert_sql(self.conn.dialect, self._schema, table, tuple(name for name, _ in fields), conflict)
        return _Statement(table, statement, _arrays(fields, rows))

    def _update(
        self, table: sa.Table, columns: frozenset[str], writes: list[tuple[tuple[Any, ...], _Write]]
    ) -> _Statement:
        keys = _key_names(table)
        names = tuple(sorted(columns))
        fields = [(f"k_{name}", table.c[name]) for name in keys] + [(f"v_{name}", table.c[name]) for name in names]
        rows = [
            dict(zip((f"k_{name}" for name in keys), key, strict=True))
            | {f"v_{name}": write.values[name] for name in names}
            for key, write in writes
        ]
        return _Statement(
            table, _update_sql(self.conn.dialect, self._schema, table, keys, names), _arrays(fields, rows)
        )


def _arrays(fields: list[tuple[str, sa.Column[Any]]], rows: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    """Per field, the array of the rows' values for its column; JSON as text, which is what the
    driver's codec for JSON takes."""
    arrays = []
    for field, column in fields:
        values = [row[field] for row in rows]
        arrays.append([json.dumps(value) for value in values] if isinstance(column.type, sa.JSON) else values)
    return tuple(arrays)


@functools.cache
def _renumbered(sql: str, by: int) -> str:
    """``sql`` with its parameters ``$1``, ``$2``, … numbered ``by`` higher."""
    return sql if by == 0 else _PARAMETER.sub(lambda found: f"${int(found[1]) + by}", sql)


@functools.cache
def _key_names(table: sa.Table) -> tuple[str, ...]:
    return tuple(column.name for column in table.primary_key.columns)


def _default(column: sa.Column[Any]) -> Any:
    """The value a column's Python-side default gives a row that leaves it out."""
    default = column.default
    if isinstance(default, sa.ColumnDefault) and default.is_scalar:
        return default.arg
    if isinstance(default, sa.ColumnDefault) and default.is_callable:
        return default.arg(None)
    raise TypeError(f"{column} has a default batches cannot compute: {default!r}")


def _schema(conn: AsyncConnection) -> str | None:
    """The schema the connection's statements go to (``schema_translate_map``; replays use one)."""
    options = conn.sync_connection.get_execution_options() if conn.sync_connection else {}
    schema: str | None = options.get("schema_translate_map", {}).get(None)
    return schema


def _array_type(dialect: sa.Dialect, column: sa.Column[Any]) -> str:
    return f"{column.type.compile(dialect=dialect)}[]"


def _qualified(schema: str | None, table: sa.Table) -> str:
    return f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'


def qualified(conn: AsyncConnection, table: sa.Table) -> str:
    """The table's name as the connection's driver-level statements must write it (in a replay's schema)."""
    return _qualified(_schema(conn), table)


@functools.cache
def _insert_sql(
    dialect: sa.Dialect, schema: str | None, table: sa.Table, columns: tuple[str, ...], conflict: frozenset[str] | None
) -> str:
    """``INSERT`` of rows given as one array per column: one statement text for any number of rows."""
    arrays = ", ".join(f"${n}::{_array_type(dialect, table.c[name])}" for n, name in enumerate(columns, 1))
    names = ", ".join(f'"{name}"' for name in columns)
    statement = f"INSERT INTO {_qualified(schema, table)} ({names}) SELECT * FROM unnest({arrays})"
    if conflict is None:
        return statement
    keys = ", ".join(f'"{name}"' for name in _key_names(table))
    if not conflict:
        return f"{statement} ON CONFLICT ({keys}) DO NOTHING"
    taken = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in sorted(conflict))
    return f"{statement} ON CONFLICT ({keys}) DO UPDATE SET {taken}"


@functools.cache
def _update_sql(
    dialect: sa.Dialect, schema: str | None, table: sa.Table, keys: tuple[str, ...], names: tuple[str, ...]
) -> str:
    """``UPDATE`` of rows by primary key, keys and values given as one array per column."""
    fields = [(f"k_{name}", table.c[name]) for name in keys] + [(f"v_{name}", table.c[name]) for name in names]
    arrays = ", ".join(f"${n}::{_array_type(dialect, column)}" for n, (_, column) in enumerate(fields, 1))
    aliases = ", ".join(f'"{field}"' for field, _ in fields)
    assignments = ", ".join(f'"{name}" = v."v_{name}"' for name in names)
    matches = " AND ".join(f't."{name}" = v."k_{name}"' for name in keys)
    return (
        f"UPDATE {_qualified(schema, table)} AS t SET {assignments} "
        f"FROM unnest({arrays}) AS v({aliases}) WHERE {matches}"
    )
