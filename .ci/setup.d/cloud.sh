#!/usr/bin/env bash
# Cloud tests' system services that pip extras cannot bring: PostgreSQL server binaries (Debian)
# and Azurite (npm). Idempotent: a machine that already has both returns at once.
set -euo pipefail

AZURITE_DIR="${FIELDSTATION_AZURITE_DIR:-$HOME/.cache/fieldstation-ci/azurite}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "cloud.sh: installing PostgreSQL server (Debian package postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # The tests start their own cluster in a temp dir; the packaged one is not needed.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        service postgresql stop >/dev/null 2>&1 || true
    fi
fi
# PostgreSQL refuses to run as root; the tests run it as this system user.
id postgres >/dev/null 2>&1 || { echo "cloud.sh: user 'postgres' missing after install" >&2; exit 1; }

if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
    echo "cloud.sh: installing Azurite (npm package azurite) into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error azurite >/dev/null
fi
echo "cloud.sh: PostgreSQL $(ls -d /usr/lib/postgresql/*/ | xargs -n1 basename | tail -1), Azurite in $AZURITE_DIR"
