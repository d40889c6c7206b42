"""The Airflow hooks: connections defined through AIRFLOW_CONN_* (JSON) resolve to the real store and catalog."""
from __future__ import annotations

import json
import uuid

import pytest

from dataengine.storage.s3 import S3Store
from dataengine.storage import FileStore
from tests.fixtures_services import S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY


def test_store_hook_reads_and_writes_through_the_connection(s3_server, monkeypatch):
    from operators.hooks import EngineStoreHook

    prefix = f"hook-{uuid.uuid4().hex[:8]}"
    host, port = s3_server.endpoint.split(":")
    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_STORE", json.dumps({
        "conn_type": "generic", "host": host, "port": int(port), "schema": S3_BUCKET,
        "login": S3_ACCESS_KEY, "password": S3_SECRET_KEY, "extra": {"secure": False, "prefix": prefix}}))
    store = EngineStoreHook().get_store()
    assert isinstance(store, S3Store) and store.uri == f"s3://{S3_BUCKET}/{prefix}"
    store.put_bytes("images/from-hook.jpg", b"written through the hook")
    direct = s3_server.store(S3_BUCKET, prefix)
    assert direct.get_bytes("images/from-hook.jpg") == b"written through the hook"
    direct.put_bytes("images/from-test.jpg", b"written directly")
    assert store.get_bytes("images/from-test.jpg") == b"written directly"


def test_store_hook_accepts_an_endpoint_url_in_extra(s3_server, monkeypatch):
    from operators.hooks import EngineStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_STORE", json.dumps({
        "conn_type": "aws", "login": S3_ACCESS_KEY, "password": S3_SECRET_KEY,
        "extra": {"endpoint_url": f"http://{s3_server.endpoint}", "bucket": S3_BUCKET}}))
    store = EngineStoreHook().get_store()
    key = f"probe/{uuid.uuid4().hex}"
    store.put_bytes(key, b"x")
    assert s3_server.store(S3_BUCKET).exists(key) and not store.secure


def test_store_hook_with_wrong_keys_fails_clearly(s3_server, monkeypatch):
    from dataengine.storage import StoreError
    from operators.hooks import EngineStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_STORE", json.dumps({
        "conn_type": "generic", "host": "127.0.0.1", "port": int(s3_server.endpoint.split(":")[1]),
        "schema": S3_BUCKET, "login": "nobody", "password": "wrong-secret", "extra": {"secure": "false"}}))
    with pytest.raises(StoreError, match="InvalidAccessKeyId"):
        EngineStoreHook().get_store().put_bytes("k", b"x")


def test_store_hook_without_bucket_names_the_missing_field(monkeypatch):
    from operators.hooks import EngineStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_STORE", json.dumps({"conn_type": "generic", "host": "h"}))
    with pytest.raises(ValueError, match="connection dataengine_store: no bucket"):
        EngineStoreHook().get_store()


def test_store_hook_falls_back_to_the_engine_config(tmp_path, monkeypatch):
    from operators.hooks import EngineStoreHook

    monkeypatch.delenv("AIRFLOW_CONN_DATAENGINE_STORE", raising=False)
    monkeypatch.setenv("DATAENGINE_STORE_URI", (tmp_path / "fallback").as_uri())
    store = EngineStoreHook().get_store()
    assert isinstance(store, FileStore) and store.root == (tmp_path / "fallback").resolve()


def test_catalog_hook_uses_the_url_in_the_connection(tmp_path, monkeypatch):
    from operators.hooks import EngineCatalogHook

    url = f"sqlite:///{tmp_path / 'from-conn.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_DB", json.dumps({"conn_type": "generic", "extra": {"url": url}}))
    catalog = EngineCatalogHook().get_catalog()
    assert catalog.url == url and catalog.count_images() == 0  # migrated: the tables exist
    assert EngineCatalogHook().get_catalog() is catalog


def test_catalog_hook_builds_a_postgres_url_from_the_connection_fields(pg_url, monkeypatch):
    from sqlalchemy.engine import make_url

    from operators.hooks import EngineCatalogHook

    parts = make_url(pg_url)
    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_DB", json.dumps({
        "conn_type": "postgres", "host": parts.host, "port": parts.port, "login": parts.username,
        "schema": parts.database}))
    catalog = EngineCatalogHook().get_catalog()
    assert catalog.dialect == "postgresql" and catalog.url == pg_url
    catalog.add_model_version("sam_tiny", "v1", "models/sam_tiny/v1/model.pt")
    assert [v.version for v in catalog.list_model_versions("sam_tiny")] == ["v1"]
    catalog.dispose()


def test_catalog_hook_falls_back_to_the_engine_config(tmp_path, monkeypatch):
    from operators.hooks import EngineCatalogHook

    monkeypatch.delenv("AIRFLOW_CONN_DATAENGINE_DB", raising=False)
    monkeypatch.setenv("DATAENGINE_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert EngineCatalogHook().get_url() == f"sqlite:///{tmp_path / 'env.db'}"
    assert EngineCatalogHook().get_catalog().count_images() == 0


def test_catalog_hook_reads_a_sqlalchemy_uri_connection(pg_url, monkeypatch):
    from operators.hooks import EngineCatalogHook

    # docker/init.sh defines the connection this way: `airflow connections add dataengine_db --conn-uri URL`
    monkeypatch.setenv("AIRFLOW_CONN_DATAENGINE_DB", pg_url)
    assert EngineCatalogHook().get_url() == pg_url
    catalog = EngineCatalogHook().get_catalog()
    assert catalog.dialect == "postgresql" and catalog.count_images() == 0
    catalog.dispose()
