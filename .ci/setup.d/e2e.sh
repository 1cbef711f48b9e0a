#!/usr/bin/env bash
# End-to-end suite (tests/e2e): the clouds live in network namespaces joined to the station by
# veth pairs, made with iproute2's `ip` (Debian package iproute2); without it (or without root)
# the suite falls back to the loopback proxy and says so in its report. The soak's chart is drawn
# with Pillow (a project dependency). Idempotent: a machine that has `ip` returns at once.
set -euo pipefail

if ! command -v ip >/dev/null 2>&1; then
    echo "e2e.sh: installing Debian's iproute2 (ip netns, veth pairs)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi
echo "e2e.sh: $(ip -V)"
