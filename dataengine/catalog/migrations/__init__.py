"""Alembic migrations of the catalog, shipped inside the package and applied by `Catalog.migrate()`."""
