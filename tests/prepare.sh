#!/usr/bin/env bash
# Machine-level prerequisites the tests need and pip cannot install: started services.
# PostgreSQL runs on development and CI machines; start it if it stopped (no-op when running or absent).
set -u
if command -v pg_lsclusters >/dev/null 2>&1; then
  if ! pg_lsclusters 2>/dev/null | grep -q online; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null || true
  fi
fi
# Redis (the Celery broker of tests/test_celery_e2e.py): start a loopback-only, non-persistent server if none answers.
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  fi
fi
# Debian's Chromium for the browser tests (tests/test_browser.py drives it headless with Playwright; no browser is
# ever downloaded by Playwright itself). Installed only when missing.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null || echo "prepare.sh: could not install chromium" >&2
fi
exit 0
