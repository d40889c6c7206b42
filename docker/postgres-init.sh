#!/usr/bin/env bash
# Creates the engine's catalog database next to Airflow's metadata database, with its own owner.
# The postgres image runs this once, on the first start of an empty data volume (/docker-entrypoint-initdb.d).
# Idempotent all the same (safe to run by hand later): an existing role gets its password refreshed, an existing
# database is kept.
#   DATAENGINE_DB_PASSWORD   the catalog owner's password (required; from docker/.env)
#   DATAENGINE_DB_USER       role name (default dataengine)      DATAENGINE_DB_NAME   database (default dataengine)
set -euo pipefail

: "${DATAENGINE_DB_PASSWORD:?postgres-init: DATAENGINE_DB_PASSWORD is empty; set it in docker/.env}"
catalog_user="${DATAENGINE_DB_USER:-dataengine}"
catalog_db="${DATAENGINE_DB_NAME:-dataengine}"

psql_admin=(psql -v ON_ERROR_STOP=1 --no-psqlrc
            --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}")

# Role: created or its password updated. psql variables (:'name', :"name") quote the values safely.
"${psql_admin[@]}" -v catalog_user="$catalog_user" -v catalog_password="$DATAENGINE_DB_PASSWORD" <<'SQL'
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'catalog_user') AS role_missing \gset
\if :role_missing
  CREATE ROLE :"catalog_user" LOGIN PASSWORD :'catalog_password';
\else
  ALTER ROLE :"catalog_user" WITH LOGIN PASSWORD :'catalog_password';
\endif
SQL

# Database: CREATE DATABASE cannot run inside a DO block or a transaction, hence \gexec.
"${psql_admin[@]}" -v catalog_user="$catalog_user" -v catalog_db="$catalog_db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'catalog_db', :'catalog_user')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'catalog_db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'catalog_db') \gexec
SQL

echo "postgres-init: catalog database $catalog_db owned by $catalog_user is ready"
