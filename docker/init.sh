#!/usr/bin/env bash
# One-shot set-up of a compose deployment: the `airflow-init` service runs this, then exits.
# Idempotent: running it again (every `docker compose up`) migrates what is behind, refreshes the pools and the
# connections from the current environment (docker/.env), and changes nothing else.
# tests/test_compose.py checks that it creates every pool in dataengine.runtime.POOLS and both connections.
set -euo pipefail

require() {
  local name
  for name in "$@"; do
    if [ -z "${!name:-}" ]; then
      echo "airflow-init: environment variable $name is empty; set it in docker/.env (see docker/.env.example)" >&2
      exit 1
    fi
  done
}

# A placeholder left from .env.example anywhere in the environment stops the set-up (names only are printed).
placeholders="$(env | grep -E '^[A-Za-z_][A-Za-z0-9_]*=.*CHANGE_ME' | cut -d= -f1 | tr '\n' ' ' || true)"
if [ -n "$placeholders" ]; then
  echo "airflow-init: replace CHANGE_ME in docker/.env; still a placeholder in: $placeholders" >&2
  exit 1
fi

require AIRFLOW__DATABASE__SQL_ALCHEMY_CONN AIRFLOW__CORE__FERNET_KEY AIRFLOW_ADMIN_USERNAME AIRFLOW_ADMIN_PASSWORD \
  AIRFLOW_ADMIN_EMAIL DATAENGINE_GPU_POOL_SLOTS DATAENGINE_BUCKET DATAENGINE_S3_ENDPOINT DATAENGINE_S3_ACCESS_KEY \
  DATAENGINE_S3_SECRET_KEY DATAENGINE_S3_SECURE DATAENGINE_DB_URL

echo "airflow-init: migrating Airflow's metadata database"
airflow db migrate

echo "airflow-init: admin user $AIRFLOW_ADMIN_USERNAME (kept as is when it already exists)"
airflow users create --role Admin --username "$AIRFLOW_ADMIN_USERNAME" --password "$AIRFLOW_ADMIN_PASSWORD" \
  --email "$AIRFLOW_ADMIN_EMAIL" --firstname Data --lastname Engine

echo "airflow-init: pools"
# One slot per GPU worker (each runs one task at a time); raise DATAENGINE_GPU_POOL_SLOTS when adding GPUs.
airflow pools set gpu "$DATAENGINE_GPU_POOL_SLOTS" "GPU slots: one per GPU worker consuming the 'gpu' queue"

echo "airflow-init: connections dataengine_store and dataengine_db (replaced from the environment)"
# dataengine_store: MinIO/S3 endpoint as host/port, keys as login/password, bucket and TLS flag in extra.
store_json="$(python - <<'PY'
import json, os
endpoint = os.environ["DATAENGINE_S3_ENDPOINT"]            # host:port
host, colon, port = endpoint.rpartition(":")
if not colon:
    host, port = endpoint, ""
print(json.dumps({
    "conn_type": "generic",
    "description": "Data engine object store (MinIO/S3)",
    "host": host,
    "port": int(port) if port else None,
    "login": os.environ["DATAENGINE_S3_ACCESS_KEY"],
    "password": os.environ["DATAENGINE_S3_SECRET_KEY"],
    "extra": {"bucket": os.environ["DATAENGINE_BUCKET"],
              "secure": os.environ["DATAENGINE_S3_SECURE"].strip().lower() in ("1", "true", "yes")},
}))
PY
)"
airflow connections delete dataengine_store >/dev/null 2>&1 || true
airflow connections add dataengine_store --conn-json "$store_json"
# dataengine_db: the catalog's SQLAlchemy URL (its own PostgreSQL database, not Airflow's); get_uri() gives it back.
airflow connections delete dataengine_db >/dev/null 2>&1 || true
airflow connections add dataengine_db --conn-uri "$DATAENGINE_DB_URL" \
  --conn-description "Data engine catalog (SQLAlchemy URL)"

echo "airflow-init: catalog schema"
dataengine init --no-airflow

echo "airflow-init: done"
