"""Query sources: the members are the rows of a SQL query, streamed in chunks.

:func:`query_records` runs a query on a DB-API 2.0 connection, a SQLAlchemy ``Engine`` or
``Connection``, or a SQLAlchemy URL, and yields one record per row. :class:`QuerySource` is the
same as a stored value for schedules: the SQL and the *name* of the environment variable that
holds the database URL, never the URL itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack
from operator import itemgetter
from pathlib import Path
from typing import Any

import attrs

from braze_cohorts._columns import Columns, Resolved, columns
from braze_cohorts._frames import external_ids
from braze_cohorts.exceptions import BrazeCohortsError, ConfigurationError, InputError, SourceError

__all__ = ["QuerySource", "query_records"]

log = logging.getLogger(__name__)

#: Rows fetched from the database at a time.
CHUNK_ROWS = 10_000

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Params = Mapping[str, Any] | Sequence[Any] | None


def query_records(
    db: object,
    sql: object,
    params: Params = None,
    *,
    external_id_column: str | None = None,
    alias_name_column: str | None = None,
    alias_label_column: str | None = None,
    device_id_column: str | None = None,
    id_columns: Collection[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[object]:
    """Yield one member record per row of a SQL query, streaming.

    Rows are fetched ``chunk_rows`` at a time, so a result of any size never sits in memory:
    with psycopg (3) a server-side cursor is used; through SQLAlchemy, ``stream_results`` (a
    server-side cursor where the dialect has one); SQLite and DuckDB step through their result.

    Columns are matched like a file's header: ``external_id``, ``alias_name``, ``alias_label``,
    ``device_id`` (or the columns the ``*_column`` arguments name), exactly or else ignoring
    case. When the external id is the only identifier column, each row comes out as a plain
    ``str`` (an ``int`` id is written in decimal); otherwise as a ``dict`` of every column.
    A ``NULL`` or wrongly typed id is not an error: the matcher rejects that row with a reason.

    The query runs when iteration starts (the function itself does not touch the database).
    On a DB-API connection the query runs in the connection's current transaction, as a plain
    ``cursor.execute(sql, params)`` would; the caller keeps ownership of the connection.

    Args:
        db: A DB-API 2.0 connection (``sqlite3``, ``psycopg``, ``duckdb`` ...), a SQLAlchemy
            ``Engine`` or ``Connection``, or a SQLAlchemy URL string (needs
            ``pip install 'braze-cohorts[sql]'`` and the dialect's driver; the engine is
            disposed of at the end).
        sql: The query (a ``str``; through SQLAlchemy also any executable such as a
            ``select()``).
        params: Query parameters, in the driver's parameter style (``?`` for sqlite3 and
            DuckDB, ``%(name)s`` for psycopg; ``:name`` through SQLAlchemy).
        external_id_column: The column holding the external id.
        alias_name_column: The column holding the alias name.
        alias_label_column: The column holding the alias label.
        device_id_column: The column holding the device id.
        id_columns: For a matcher that reads other fields: identifier columns kept under their
            own names (pass ``matcher.fields``).
        chunk_rows: Rows fetched at a time.

    Returns:
        An iterator of records.

    Raises:
        ConfigurationError: At once, if ``db`` is not a connection, engine or URL, ``sql`` is
            empty, or a URL is given without SQLAlchemy installed.
        InputError: From the iterator, if the result has no identifier column (or repeats one).
        SourceError: From the iterator, if connecting fails, or the query fails, at once or
            after some rows (a dropped connection, a runtime error in the query). Rows yielded
            before are incomplete: do not use them as the whole membership (the sync engine
            fails the run).
    """
    if isinstance(sql, str):
        if not sql.strip():
            raise ConfigurationError("the query is empty")
    elif sql is None:
        raise ConfigurationError("the query is missing")
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigurationError("chunk_rows must be a positive int")
    cols = columns(
        external_id_column=external_id_column,
        alias_name_column=alias_name_column,
        alias_label_column=alias_label_column,
        device_id_column=device_id_column,
        id_columns=id_columns,
    )
    kind = _db_kind(db)
    if kind == "url":
        _sqlalchemy()
    elif not isinstance(sql, str) and kind == "dbapi":
        raise ConfigurationError("a DB-API connection takes the query as a str")
    return _records(kind, db, sql, params, cols, chunk_rows)


def _db_kind(db: object) -> str:
    if isinstance(db, str):
        if "://" not in db and not db.startswith("sqlite:"):
            raise ConfigurationError(
                "db must be a connection, a SQLAlchemy Engine or Connection, or a database URL "
                "(dialect+driver://...); the str given is not a URL"
            )
        return "url"
    for cls in type(db).__mro__:
        if (getattr(cls, "__module__", "") or "").partition(".")[0] == "sqlalchemy":
            if cls.__name__ == "Engine":
                return "engine"
            if cls.__name__ == "Connection":
                return "sa-connection"
    if callable(getattr(db, "cursor", None)):
        return "dbapi"
    raise ConfigurationError(
        f"db must be a DB-API connection, a SQLAlchemy Engine or Connection, or a database "
        f"URL, not {type(db).__name__}"
    )


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise ConfigurationError(
            "a database URL needs SQLAlchemy: pip install 'braze-cohorts[sql]' (and the "
            "database's driver)"
        ) from exc
    return sqlalchemy


class _Progress:
    rows = 0


def _records(
    kind: str, db: Any, sql: Any, params: Params, cols: Columns, chunk_rows: int
) -> Iterator[object]:
    progress = _Progress()
    with ExitStack() as stack:
        try:
            names, fetch = _execute(stack, kind, db, sql, params, chunk_rows)
        except BrazeCohortsError:
            raise
        except Exception as exc:
            raise SourceError(f"the query failed: {_reason(exc)}") from exc
        resolved = cols.resolve(names, "the query's result")
        try:
            yield from _rows(resolved, fetch, progress)
        except BrazeCohortsError:
            raise
        except Exception as exc:
            raise SourceError(
                f"the query failed after {progress.rows:,} rows: {_reason(exc)}; the rows read "
                "are incomplete"
            ) from exc
    log.debug("read %d rows from a query", progress.rows)


def _rows(resolved: Resolved, fetch: Any, progress: _Progress) -> Iterator[object]:
    names = resolved.names
    only = resolved.external_id_only
    pick = itemgetter(only) if only is not None else None
    while True:
        rows = fetch()
        if not rows:
            return
        progress.rows += len(rows)
        if pick is not None:
            yield from external_ids(list(map(pick, rows)))
        else:
            for row in rows:
                yield dict(zip(names, row, strict=True))


def _execute(
    stack: ExitStack, kind: str, db: Any, sql: Any, params: Params, chunk_rows: int
) -> tuple[list[str], Any]:
    """Run the query; return the result's column names and a ``fetch()`` of the next chunk."""
    if kind == "dbapi":
        return _execute_dbapi(stack, db, sql, params, chunk_rows)
    sqlalchemy = _sqlalchemy()
    if kind == "url":
        engine = sqlalchemy.create_engine(db)
        stack.callback(engine.dispose)
        kind, db = "engine", engine
    if kind == "engine":
        db = stack.enter_context(db.connect())
    statement = sqlalchemy.text(sql) if isinstance(sql, str) else sql
    # Options for this statement only: a caller's Connection keeps its own.
    options = {"stream_results": True, "yield_per": chunk_rows}
    result = db.execute(statement, params, execution_options=options)
    stack.callback(result.close)
    if not result.returns_rows:
        raise InputError("the query returned no rows to read (is it a SELECT?)")
    names = [str(name) for name in result.keys()]  # noqa: SIM118 - a result, not a dict
    return names, lambda: result.fetchmany(chunk_rows)


def _execute_dbapi(
    stack: ExitStack, db: Any, sql: str, params: Params, chunk_rows: int
) -> tuple[list[str], Any]:
    module = (type(db).__module__ or "").partition(".")[0]
    if module == "psycopg":
        # A server-side cursor streams the result; it needs a transaction. When the connection
        # is idle, the query gets one of its own (committed at the end, rolled back on error);
        # inside the caller's transaction, it runs in that one.
        from psycopg.pq import TransactionStatus

        if db.info.transaction_status == TransactionStatus.IDLE:
            stack.enter_context(db.transaction())
        cursor = db.cursor(name=f"braze_cohorts_{uuid.uuid4().hex}")
        cursor.itersize = chunk_rows
    else:
        cursor = db.cursor()
        with contextlib.suppress(AttributeError, TypeError):  # a read-only arraysize
            cursor.arraysize = chunk_rows
    stack.callback(_quietly_close, cursor)
    if params is None:
        cursor.execute(sql)
    else:
        cursor.execute(sql, params)
    description = cursor.description
    if not description:
        raise InputError("the query returned no rows to read (is it a SELECT?)")
    return [str(column[0]) for column in description], lambda: cursor.fetchmany(chunk_rows)


def _quietly_close(cursor: Any) -> None:
    try:
        cursor.close()
    except Exception:  # the connection may be gone already: the error that matters was raised
        log.debug("closing the query's cursor failed", exc_info=True)


def _reason(exc: BaseException) -> str:
    """The driver's error in one line (SQLAlchemy's statement and parameters left out)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) > 300:
        line = line[:300] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


# --------------------------------------------------------------------------------------------
# A stored query source, for schedules
# --------------------------------------------------------------------------------------------


def _check_sql(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("QuerySource needs the query as a non-empty str")


def _check_env(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        shape = f"a str of {len(value)} characters" if isinstance(value, str) else type(value)
        raise ConfigurationError(
            "url_env must be the NAME of an environment variable (letters, digits, _), not "
            f"the URL itself; got {shape}"
        )


def _check_column(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigurationError(f"{attr.name} must be a non-empty str")


def _to_params(value: object) -> Mapping[str, Any] | tuple[Any, ...] | None:
    if value is None or isinstance(value, Mapping):
        return dict(value) if value is not None else None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError("params must be a mapping or a sequence of values")
    return tuple(value)


@attrs.frozen(kw_only=True)
class QuerySource:
    """A query whose rows are a cohort's members: what a schedule stores for a query source.

    The database URL is read from an environment variable each time the query runs.
    Only the query and the *name* of the environment variable are kept (and stored by
    :meth:`to_dict`), never the URL or its password. :meth:`records` reads the variable and
    runs the query through SQLAlchemy (``pip install 'braze-cohorts[sql]'`` and the driver).

    Args:
        sql: The query.
        url_env: The name of the environment variable holding the SQLAlchemy database URL,
            e.g. ``"WAREHOUSE_URL"``.
        params: Query parameters (SQLAlchemy style: ``:name`` in the query, a mapping here).
        external_id_column: The column holding the external id.
        alias_name_column: The column holding the alias name.
        alias_label_column: The column holding the alias label.
        device_id_column: The column holding the device id.

    Raises:
        ConfigurationError: If the query is empty, ``url_env`` is not a variable name (a URL
            given by mistake is refused without being echoed), or a column name is empty.
    """

    sql: str = attrs.field(validator=_check_sql)
    url_env: str = attrs.field(validator=_check_env)
    params: Mapping[str, Any] | tuple[Any, ...] | None = attrs.field(
        default=None, converter=_to_params
    )
    external_id_column: str | None = attrs.field(default=None, validator=_check_column)
    alias_name_column: str | None = attrs.field(default=None, validator=_check_column)
    alias_label_column: str | None = attrs.field(default=None, validator=_check_column)
    device_id_column: str | None = attrs.field(default=None, validator=_check_column)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, url_env: str, **kwargs: Any) -> QuerySource:
        """A source whose query is read (now, once) from a ``.sql`` file.

        Raises:
            InputError: If the file cannot be read or is empty.
        """
        file = Path(os.fspath(path))
        try:
            sql = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{file}: cannot read the query ({type(exc).__name__})") from exc
        if not sql.strip():
            raise InputError(f"{file}: the query file is empty")
        return cls(sql=sql, url_env=url_env, **kwargs)

    def url(self, environ: Mapping[str, str] | None = None) -> str:
        """The database URL, from the environment variable (never stored).

        Raises:
            ConfigurationError: If the variable is not set or is empty (its name is in the
                message, its value never).
        """
        env = os.environ if environ is None else environ
        value = env.get(self.url_env, "")
        if not value.strip():
            raise ConfigurationError(
                f"the environment variable {self.url_env} (the database URL of this query "
                f"source) is {'empty' if self.url_env in env else 'not set'}"
            )
        return value

    def check(self, environ: Mapping[str, str] | None = None) -> None:
        """Check what can be checked without connecting.

        That is: the variable is set, and SQLAlchemy is installed.

        Raises:
            ConfigurationError: If not.
        """
        self.url(environ)
        _sqlalchemy()

    def records(self, environ: Mapping[str, str] | None = None) -> Iterator[object]:
        """Run the query (when iterated) and yield one record per row (see :func:`query_records`).

        Args:
            environ: Where to read the variable (default: ``os.environ``).

        Raises:
            ConfigurationError: At once, if the variable is not set or SQLAlchemy is missing.
            InputError: From the iterator, as :func:`query_records`.
            SourceError: From the iterator, as :func:`query_records`.
        """
        return query_records(
            self.url(environ),
            self.sql,
            self.params,
            external_id_column=self.external_id_column,
            alias_name_column=self.alias_name_column,
            alias_label_column=self.alias_label_column,
            device_id_column=self.device_id_column,
        )

    def to_dict(self) -> dict[str, Any]:
        """The source as JSON-ready data (what a schedule stores): no URL, only its variable."""
        data: dict[str, Any] = {"sql": self.sql, "url_env": self.url_env}
        if self.params is not None:
            data["params"] = (
                dict(self.params) if isinstance(self.params, Mapping) else list(self.params)
            )
        for name in (
            "external_id_column",
            "alias_name_column",
            "alias_label_column",
            "device_id_column",
        ):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuerySource:
        """Rebuild a source from :meth:`to_dict`'s data.

        Raises:
            ConfigurationError: If the data is not a valid query source.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError("a query source must be a mapping")
        known = {field.name for field in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(f"unknown query source fields: {unknown}")
        if "sql" not in data or "url_env" not in data:
            raise ConfigurationError("a query source needs sql and url_env")
        return cls(**dict(data))
