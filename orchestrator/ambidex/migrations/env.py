"""migrations.env: Alembic's entry point, run on the connection ambidex.db.migrate hands over.

``ambidex.db.migrate`` builds the Alembic config in code and passes an open
connection (already holding the migration lock) in ``config.attributes``. Run by
the plain ``alembic`` command instead, it connects to ``sqlalchemy.url`` through
``ambidex.db.connect`` so the same dialect settings apply. Imported as an
ordinary module (tests, packaging), it does nothing.

Later revisions chain on ``0001_registry``; each should list the tables and
triggers it creates in ``ambidex_tables`` / ``ambidex_triggers`` so a half-applied
MariaDB migration is detected.
"""
from __future__ import annotations

from alembic import context


def _run(connection) -> None:
    from ambidex.tables import metadata

    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations() -> None:
    """Run the migrations Alembic was asked for, online (the only mode ambidex uses) or offline."""
    config = context.config
    if context.is_offline_mode():
        from ambidex.tables import metadata

        context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                          literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from ambidex.db import connect

    engine = connect(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if hasattr(context, "config"):  # only when Alembic itself executes this file
    run_migrations()
