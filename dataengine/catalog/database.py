"""The catalog's connection: engine set-up per backend, sessions, and programmatic Alembic migrations."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30
PG_MIGRATION_LOCK = 4_242_001  # pg_advisory_xact_lock key: one migrator at a time


class CatalogError(RuntimeError):
    """A catalog operation that cannot be done as asked (the message says what and why)."""


class CatalogUnavailable(RuntimeError):
    """The catalog database could not be reached or dropped the connection; the transaction was rolled back,
    so the operation can be retried as it is once the database is back."""


def make_engine(url: str) -> Engine:
    """Return an engine for `url`: SQLite in WAL mode with a busy timeout and foreign keys, or a server DB."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True)
    database = parsed.database
    if not database or database == ":memory:":
        # One shared connection, so every session sees the same in-memory database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # the driver's implicit BEGIN is off: `_sqlite_begin` decides
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection):
        # A writer takes SQLite's write lock when its transaction starts (BEGIN IMMEDIATE), so what it read
        # stays true until it commits, and concurrent writers queue on the busy timeout instead of failing.
        connection.exec_driver_sql(f"BEGIN {connection.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


def alembic_config(connection=None):
    """Return an Alembic `Config` for the shipped migrations (no alembic.ini), bound to `connection` if given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest migration's revision id."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class CatalogDatabase:
    """Engine and sessions of one catalog database; the domain operations are in the mixins of `Catalog`."""

    _migrate_lock = threading.Lock()

    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql` (or another SQLAlchemy backend name)."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, write: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on clean exit, rolled back on error.

        `write=False` for read-only work: on SQLite it then does not take the write lock.
        """
        from sqlalchemy.exc import InterfaceError, OperationalError

        try:
            with (self._write_sessions if write else self._read_sessions)() as session, session.begin():
                yield session
        except (OperationalError, InterfaceError) as exc:
            reason = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CatalogUnavailable(f"catalog database {self._safe_url()} is unavailable ({reason}); nothing of "
                                     "this operation was written: retry once the database answers again") from exc

    def migrate(self) -> str:
        """Apply every pending migration (idempotent, safe with concurrent callers); return the revision."""
        from alembic import command

        with self._migrate_lock, self._writer.begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"))
            command.upgrade(alembic_config(connection), "head")
        return self.revision()

    def revision(self) -> str | None:
        """Return the schema revision the database is at (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.dispose()

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._safe_url()!r})"
