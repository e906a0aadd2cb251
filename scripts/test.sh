#!/usr/bin/env bash
# Install complexity-tracker with its test extras, make sure the services the tests use are
# up (headless chromium, PostgreSQL on 127.0.0.1:5432), and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh test

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium for the MLflow UI browser test"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null \
        || echo "warning: could not install chromium; browser tests will be skipped (or fail under CI=true)"
fi

if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start \
        || echo "warning: PostgreSQL is not reachable; its tests will be skipped (or fail under CI=true)"
fi

exec .venv/bin/python -m pytest -q "$@"
