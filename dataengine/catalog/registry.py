"""The model registry: versions of each model name, exactly one of them in production, and its history.

"Exactly one production version per name" is enforced by the database itself (a partial unique index on
`name` where `status = 'production'`), and a promotion or rollback changes both rows and writes its event in
one transaction, so a reader never sees zero or two production versions.
"""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from dataengine.catalog.database import CatalogError
from dataengine.catalog.schema import MODEL_STATUSES, ModelEvent, ModelVersion, utcnow


class ModelVersionNotFound(CatalogError):
    """No such model name and version in the registry."""


class ModelRegistry:
    """Mixin of `Catalog`: model versions, promotions and rollbacks."""

    def add_model_version(self, name: str, version: str, key: str, *, parent: str | None = None,
                          training_snapshot_key: str | None = None, metrics: dict | None = None,
                          status: str = "candidate") -> tuple[ModelVersion, bool]:
        """Register a model version; return (it, True), or (the existing one, False) if already registered.

        Registering the same name and version again with another store key is an error (versions are immutable).
        To put a version in production use `promote`, so the change is recorded.
        """
        if status not in ("candidate", "archived"):
            raise CatalogError(f"model {name} {version}: register as candidate or archived, then promote "
                               f"(got status {status!r}; statuses are {', '.join(MODEL_STATUSES)})")
        existing = self.get_model_version(name, version)
        if existing is None:
            row = ModelVersion(name=name, version=version, key=key, parent=parent,
                               training_snapshot_key=training_snapshot_key, metrics=dict(metrics or {}),
                               status=status, created_at=utcnow())
            try:
                with self.session() as session:
                    session.add(row)
                return row, True
            except IntegrityError:
                existing = self.get_model_version(name, version)
                if existing is None:
                    raise
        if existing.key != key:
            raise CatalogError(f"model {name} {version} is already registered with key {existing.key}, not {key}")
        return existing, False

    def get_model_version(self, name: str, version: str) -> ModelVersion | None:
        """Return the version or None."""
        with self.session(write=False) as session:
            return session.get(ModelVersion, (name, version))

    def update_model_metrics(self, name: str, version: str, metrics: dict) -> ModelVersion:
        """Merge `metrics` into the version's metrics (e.g. evaluation results added after training)."""
        with self.session() as session:
            row = session.get(ModelVersion, (name, version), with_for_update=True)
            if row is None:
                raise ModelVersionNotFound(f"no model {name} version {version}")
            row.metrics = {**(row.metrics or {}), **metrics}
            return row

    def production_version(self, name: str) -> ModelVersion | None:
        """Return the name's production version, or None if none was promoted."""
        with self.session(write=False) as session:
            return session.scalars(select(ModelVersion).where(ModelVersion.name == name,
                                                              ModelVersion.status == "production")).first()

    def list_model_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Return registered versions (of `name`, if given), oldest first."""
        query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.created_at, ModelVersion.version)
        if name is not None:
            query = query.where(ModelVersion.name == name)
        with self.session(write=False) as session:
            return list(session.scalars(query))

    def model_events(self, name: str | None = None) -> list[ModelEvent]:
        """Return promotions and rollbacks (of `name`, if given), oldest first."""
        query = select(ModelEvent).order_by(ModelEvent.id)
        if name is not None:
            query = query.where(ModelEvent.name == name)
        with self.session(write=False) as session:
            return list(session.scalars(query))

    def promote(self, name: str, version: str, by: str, reason: str) -> ModelVersion:
        """Make `version` the production version of `name` (the previous one is archived); return it."""
        return self._switch_production(name, version, by, reason, kind="promotion")

    def rollback(self, name: str, by: str, reason: str) -> ModelVersion:
        """Put back the version the current production version replaced when it was promoted; return it."""
        current = self.production_version(name)
        if current is None:
            raise CatalogError(f"model {name}: nothing in production, so nothing to roll back")
        with self.session(write=False) as session:
            promoted = session.scalars(select(ModelEvent).where(
                ModelEvent.name == name, ModelEvent.kind == "promotion", ModelEvent.to_version == current.version)
                .order_by(ModelEvent.id.desc()).limit(1)).first()
        if promoted is None or promoted.from_version is None:
            raise CatalogError(f"model {name}: production version {current.version} replaced no earlier "
                               f"version, so there is nothing to roll back to")
        return self._switch_production(name, promoted.from_version, by, reason, kind="rollback",
                                       expected_current=current.version)

    def _switch_production(self, name: str, version: str, by: str, reason: str, kind: str,
                           expected_current: str | None = None) -> ModelVersion:
        for _ in range(5):
            try:
                with self.session() as session:
                    # Lock the name's rows (PostgreSQL; SQLite serialises writers anyway).
                    rows = {row.version: row for row in session.scalars(
                        select(ModelVersion).where(ModelVersion.name == name).with_for_update())}
                    target = rows.get(version)
                    if target is None:
                        action = "promote" if kind == "promotion" else "roll back to"
                        raise ModelVersionNotFound(f"no model {name} version {version} to {action}")
                    current = next((row for row in rows.values() if row.status == "production"), None)
                    if expected_current is not None and (current is None or current.version != expected_current):
                        raise CatalogError(f"model {name}: production changed during the rollback "
                                           f"(now {current.version if current else 'none'}); try again")
                    if current is not None and current.version == version:
                        return target  # already in production: nothing to change, nothing to record
                    session.execute(update(ModelVersion).where(ModelVersion.name == name,
                                                               ModelVersion.status == "production")
                                    .values(status="archived"))
                    session.execute(update(ModelVersion).where(ModelVersion.name == name,
                                                               ModelVersion.version == version)
                                    .values(status="production"))
                    session.add(ModelEvent(name=name, kind=kind, from_version=current.version if current else None,
                                           to_version=version, by=by, reason=reason, at=utcnow()))
                    return target
            except IntegrityError:
                continue  # another promotion of the same name won the race: read again and retry
        raise CatalogError(f"model {name}: could not switch production to {version} (concurrent promotions)")
