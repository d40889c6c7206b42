"""Alembic environment for the catalog: runs on the connection `Catalog.migrate()` hands over.

No alembic.ini is needed. For the alembic command line (writing a new revision), run from this folder with
`alembic -c /dev/null -x url=sqlite:///scratch.db revision --autogenerate -m "..."` after setting
`script_location`; see docs/storage.md, "Catalog migrations".
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from dataengine.catalog.schema import Base


def _configure_and_run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    """Run the migrations offline (SQL script) or online (on the handed-over or configured connection)."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url") or context.get_x_argument(as_dictionary=True).get("url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _configure_and_run(conn)
    finally:
        engine.dispose()


run()
