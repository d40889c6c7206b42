"""The engine's store and catalog from a connection record: what the Airflow connections `dataengine_store` and
`dataengine_db` describe, read the same way in tasks (`operators.hooks`) and in the API server's plugin
(`plugins/dataengine_plugin.py`).

A connection is any object with Airflow's connection fields (`conn_id`, `conn_type`, `host`, `port`, `schema`,
`login`, `password`, `extra_dejson`, `get_uri()`): the adapters fetch it from Airflow and hand it here, so the
engine reads its fields and never imports Airflow.
- `dataengine_store` -> an `ObjectStore`: endpoint in host/port (or extra `endpoint` / `endpoint_url`, e.g.
  "http://minio:9000"), bucket in schema (or extra `bucket`), optional extra `prefix`, access and secret keys in
  login/password, extra `secure` (true for HTTPS), extra `region`. Extra `store_uri` (`s3://bucket/prefix` or
  `file:///path`) may name the store instead.
- `dataengine_db` -> a SQLAlchemy URL: extra `url` (or `sqlalchemy_url`), else built from a `postgres`/`sqlite`
  connection, else the connection's own URI.
"""
from __future__ import annotations

from urllib.parse import quote

STORE_CONN_ID = "dataengine_store"
DB_CONN_ID = "dataengine_db"


def store_from_connection(conn):
    """Return the `ObjectStore` an Airflow connection describes (see the module docstring for the fields)."""
    from dataengine.storage import open_store

    extra = conn.extra_dejson or {}
    if extra.get("store_uri"):
        uri = extra["store_uri"]
    else:
        bucket = extra.get("bucket") or conn.schema
        if not bucket:
            raise ValueError(f"connection {conn.conn_id}: no bucket (set the schema field or extra 'bucket')")
        prefix = (extra.get("prefix") or "").strip("/")
        uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    if not uri.startswith("s3://"):
        return open_store(uri)
    endpoint = extra.get("endpoint") or extra.get("endpoint_url")
    if not endpoint and conn.host:
        endpoint = f"{conn.host}:{conn.port}" if conn.port else conn.host
    if not endpoint:
        raise ValueError(f"connection {conn.conn_id}: no S3 endpoint (set host/port or extra 'endpoint')")
    options = {"region": extra["region"]} if extra.get("region") else {}
    return open_store(uri, endpoint=endpoint, access_key=conn.login or None, secret_key=conn.password or None,
                      secure=extra.get("secure"), **options)


def catalog_url_from_connection(conn) -> str:
    """Return the SQLAlchemy URL an Airflow connection describes."""
    extra = conn.extra_dejson or {}
    url = extra.get("url") or extra.get("sqlalchemy_url")
    if url:
        return url
    if conn.conn_type in ("postgres", "postgresql"):
        credentials = ""
        if conn.login:
            credentials = quote(conn.login, safe="")
            if conn.password:
                credentials += ":" + quote(conn.password, safe="")
            credentials += "@"
        port = f":{conn.port}" if conn.port else ""
        return f"postgresql+psycopg2://{credentials}{conn.host or 'localhost'}{port}/{conn.schema or 'postgres'}"
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    uri = conn.get_uri()
    if uri.startswith("postgres://"):
        uri = "postgresql+psycopg2://" + uri[len("postgres://"):]
    return uri


__all__ = ["STORE_CONN_ID", "DB_CONN_ID", "store_from_connection", "catalog_url_from_connection"]
