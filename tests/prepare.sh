#!/usr/bin/env bash
# Machine-level prerequisites the tests need and pip cannot install: started services.
# PostgreSQL runs on development and CI machines; start it if it stopped (no-op when running or absent).
set -u
if command -v pg_lsclusters >/dev/null 2>&1; then
  if ! pg_lsclusters 2>/dev/null | grep -q online; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null || true
  fi
fi
exit 0
