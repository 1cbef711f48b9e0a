#!/usr/bin/env bash
# Station page (issue 15): its browser tests drive Debian's Chromium through Playwright
# (`executable_path=/usr/bin/chromium`); Playwright's own browser download is never used. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
echo "web: $(chromium --version 2>/dev/null || echo 'chromium (version unknown)')"
